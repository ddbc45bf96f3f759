"""report.md and the sweep reports: tables, paired statistics, probe and curve figures from a run folder."""
