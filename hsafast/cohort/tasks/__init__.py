"""The steps of the batch commands (``hsafast tissue``, ``tile``, ``embed``, ``quantify``,
``register``, ``score``).

Each is a :class:`hsafast.cohort.Task`; the command line only builds one from its
options and hands it to :func:`hsafast.cohort.run_cohort`. Importing this package is
cheap: each task imports its heavy libraries when a worker sets it up or runs it.
"""

from hsafast.cohort.tasks.embed import EmbedTask
from hsafast.cohort.tasks.quantify import QuantifyTask
from hsafast.cohort.tasks.register import RegisterTask, registration_config
from hsafast.cohort.tasks.score import ScoreTask
from hsafast.cohort.tasks.tile import TileTask
from hsafast.cohort.tasks.tissue import TissueTask

__all__ = [
    "EmbedTask",
    "QuantifyTask",
    "RegisterTask",
    "ScoreTask",
    "TileTask",
    "TissueTask",
    "registration_config",
]
