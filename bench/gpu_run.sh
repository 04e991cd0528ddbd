#!/usr/bin/env bash
# The GPU part of docs/benchmarks.md in one script: the GPU's name, encoder throughput of
# the paper and cpu-quick presets, then the paper benchmark with the `paper` pretraining
# preset (epochs sized to fit PRETRAIN_MINUTES on this GPU, at most the preset's 300) and
# the paper fine-tuning preset, seeds 0-9, stopping new fits after STOP_AFTER minutes.
# Rerunning it with the same OUT skips what is done and goes on with the remaining fits.
#
#   bench/gpu_run.sh [OUT]        (default OUT: var/benchmarks/gpu)
#
# Environment: PYTHON (default .venv/bin/python, else python3), RGZ_SHARED_DATA (the data
# folder, default ../shared/data), PRETRAIN_MINUTES (default 4), STOP_AFTER (default 8,
# counted from the start of the benchmark command), SEEDS (default 0-9); for a dry run on a
# CPU: PRESET=tiny FINETUNE_PRESET=tiny DEVICE=cpu THROUGHPUT_PRESETS=tiny BATCH=8 BUDGETS=36,73.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-var/benchmarks/gpu}"
py="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  "$py" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
    "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")'
  nproc
} | tee "$out/machine.txt"

if [ ! -s "$out/encoder_throughput.md" ]; then
  "$py" -m bench.encoder_throughput --presets "${THROUGHPUT_PRESETS:-paper,cpu-quick}" --batch-size "${BATCH:-1024}" \
    --threads 8 --steps 10 --embed-images "${EMBED_IMAGES:-16384}" --device "${DEVICE:-cuda}" | tee "$out/encoder_throughput.md.partial" &&
    mv "$out/encoder_throughput.md.partial" "$out/encoder_throughput.md"
fi

"$py" -m bench.paper_benchmark --pretrain-preset "${PRESET:-paper}" --pretrain-minutes "${PRETRAIN_MINUTES:-4}" \
  --finetune-preset "${FINETUNE_PRESET:-paper}" --budgets "${BUDGETS:-36,73,145,291,729}" --seeds "${SEEDS:-0-9}" \
  --stop-after "${STOP_AFTER:-8}" --device "${DEVICE:-cuda}" --threads 8 --out "$out" --docs-plot "" |
  tee "$out/paper_benchmark.md"
