#!/usr/bin/env bash
# The Python packages benchmarks/gpu_checks.py needs that this workplace's GPU machine lacks (its image has torch,
# accelerate 1.15.0, safetensors, tokenizers, huggingface-hub 1.x, scipy, pandas, pyarrow... but no trl, datasets
# or bitsandbytes, and another transformers), as wheels in .whl/ (ignored through .git/info/exclude), for the
# device tool to carry: about 59 MB, under its 64 MiB with the working tree (about 2 MB).
#
#   bash benchmarks/gpu_wheels.sh        # here, once; then the device command of benchmarks/RESULTS.md, "GPU checks"
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# the versions pyproject.toml pins (bitsandbytes: the qlora extra); datasets' dill and multiprocess with it
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  transformers==5.24.0 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 peft==0.21.2 \
  bitsandbytes==0.50.2
du -sh .whl
