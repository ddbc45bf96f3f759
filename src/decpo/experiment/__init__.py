"""The paper's experiment as a plan of stages (pairs, trainings, probes, evaluations, report) and its recipes."""

from decpo.experiment.recipes import run_experiment, sweep_layers, sweep_strength

__all__ = ["run_experiment", "sweep_layers", "sweep_strength"]
