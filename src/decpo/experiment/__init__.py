"""The paper's experiment as a plan of stages (pairs, trainings, probes, evaluations, report) and its recipes.

The recipes are imported on first use (`decpo.lazy`): they pull in the trainer (torch, trl), which the
command line's error classes (`decpo.experiment.executors.base`) do not need.
"""

from decpo.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__, {"decpo.experiment.recipes": ("run_experiment", "sweep_layers", "sweep_strength")}
)
