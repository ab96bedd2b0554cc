"""Where candidates are evaluated: in this process (:class:`LocalExecutor`) or on Ray actors
(``ecad.search.executors.ray_actors.RayExecutor``, imported only when Ray is used). Both
implement ``ecad.search.optimizer.evaluation.Executor``; ``ecad.cli.calibrate`` picks one."""

from ecad.search.optimizer.evaluation import Executor
from ecad.search.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor"]
