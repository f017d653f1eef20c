#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a GPU session: downloads into .whl/ (in .gitignore) the
# wheels the device machine lacks or has in other versions. The device has no internet and its
# own torch (2.11, CUDA 13); these are our pins, plus trl 1.12.0 for bench/ppo_vs_trl.py and the
# two packages datasets needs that the image does not hold. About 60 MB: under the 64 MiB a
# device call may carry, with the repo (~1 MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl \
    bitsandbytes==0.50.2 transformers==5.23.0 peft==0.21.2 datasets==5.2.0 trl==1.12.0 \
    dill==0.4.1 multiprocess==0.70.19
du -ch .whl/*.whl | tail -1
