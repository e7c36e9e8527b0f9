"""``python -m hsafast.trainer --config run.toml`` (what ``torchrun`` starts per process)."""

import sys

from .cli import main

sys.exit(main())
