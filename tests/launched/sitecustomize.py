"""Test support, for the training processes that `decpo run --num-processes N` launches itself: Python imports
this module at start-up (its ``sitecustomize`` hook) in every process with this folder on PYTHONPATH.

Where the environment holds ``DECPO_TEST_FSDP_ON_CPU=1`` and ``WORLD_SIZE`` (a process torchrun started, not
the launcher nor the driving run), it applies `distributed_jobs.launched_fsdp_on_cpu`: accelerate patched to
run FSDP2 on CPU processes and the pairs in file order. Anywhere else it does nothing, so what users run
(without this folder on their path) is untouched. tests/test_distributed.py puts it on the path."""

import os

if os.environ.get("DECPO_TEST_FSDP_ON_CPU") == "1" and "WORLD_SIZE" in os.environ:
    import distributed_jobs  # tests/, also on PYTHONPATH

    distributed_jobs.launched_fsdp_on_cpu()
