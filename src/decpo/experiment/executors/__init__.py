"""Where the stages of an experiment run: in this process, or as jobs of submitit (local, Slurm) or Ray."""
