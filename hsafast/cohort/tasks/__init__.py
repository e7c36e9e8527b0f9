"""The steps of the batch commands (``hsafast tissue``, ``tile``, ``quantify``, ``register``).

Each is a :class:`hsafast.cohort.Task`; the command line only builds one from its
options and hands it to :func:`hsafast.cohort.run_cohort`.
"""

from hsafast.cohort.tasks.quantify import QuantifyTask
from hsafast.cohort.tasks.register import RegisterTask, registration_config
from hsafast.cohort.tasks.tile import TileTask
from hsafast.cohort.tasks.tissue import TissueTask

__all__ = ["QuantifyTask", "RegisterTask", "TileTask", "TissueTask", "registration_config"]
