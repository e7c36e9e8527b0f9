import sys

from hsafast.cli import main

sys.exit(main())
