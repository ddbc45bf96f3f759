"""Where the stages of an experiment run: in this process, or as jobs of submitit (local, Slurm) or Ray.

``base`` (errors, resources, the Job/Engine protocols), ``worker`` (what runs inside a job), ``submitit`` and
``ray`` (the engines), ``dispatch`` (the driver's loop, `make_engine`).
"""
