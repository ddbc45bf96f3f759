"""decpo: preference alignment with feature decorrelation (DecPO) and monosemanticity probes."""

__version__ = "0.1.0"
