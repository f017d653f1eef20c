#!/usr/bin/env bash
# Run ON the device machine (the `run` tool, with carry [".whl"] after bench/gpu/fetch_wheels.sh
# here): steps of a GPU session's checks, each one's log written to $OUT/<step>.log. None has run
# on a GPU yet, so their times are unknown: start with `tests`, and keep each call under its
# 10-minute limit (several steps may share a call: `bash bench/gpu/run.sh tests memory`).
#
#   bash bench/gpu/run.sh tests    # CUDA tests: 4-bit loading, QLoRA PPO learns, the memory estimate
#   bash bench/gpu/run.sh memory   # bench/ppo_memory.py at Llama-2-7B shapes, without and with
#                                  # gradient checkpointing; writes the random 7B weights once
#   bash bench/gpu/run.sh trl-1b   # bench/ppo_vs_trl.py, 4-bit, Llama-3.2-1B shapes
#   bash bench/gpu/run.sh trl-7b   # the same at Llama-2-7B shapes (TRL may run out of memory)
#
# A machine stays warm 30 s after a call, so every step installs the wheels again (seconds)
# and the random weights under bench/.cache are rewritten on a fresh machine.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || { echo "which steps: tests, memory, trl-1b, trl-7b" >&2; exit 2; }
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ ! -d /tmp/site/trl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site
for step in "$@"; do
log="$OUT/$step.log"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers, peft, bitsandbytes as b; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', b.__version__)"
} 2>&1 | tee "$log"
case "$step" in
    tests)
        # Core tests only: the device has no Qt (and no pytest-qt). The CUDA-marked ones, then
        # the activation calibration, which runs on CUDA (bf16, its attention kernels) there.
        python3 -m pytest -q -m cuda tests/core 2>&1 | tee -a "$log"
        python3 -m pytest -q tests/core/test_memory.py 2>&1 | tee -a "$log" ;;
    memory)
        python3 bench/ppo_memory.py 2>&1 | tee -a "$log"
        python3 bench/ppo_memory.py --checkpointing 2>&1 | tee -a "$log" ;;
    trl-1b)
        python3 bench/ppo_vs_trl.py --model llama-3.2-1b --device cuda --quantization 4bit --trl-python python3 \
            2>&1 | tee -a "$log" ;;
    trl-7b)
        python3 bench/ppo_vs_trl.py --model llama-2-7b --device cuda --quantization 4bit --steps 3 \
            --trl-python python3 2>&1 | tee -a "$log" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
esac
done
