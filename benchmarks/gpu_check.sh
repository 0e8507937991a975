#!/usr/bin/env bash
# GPU check (issue 15): Std-CoT tokens/s and MFU vs TRL on random-initialised Qwen2.5-0.5B/-1.5B-shaped students,
# MIND/COMPACT overhead, and the prompt-shared packing equivalence on CUDA. About 5 minutes on one H100/H200
# (each part stops being started after --budget-s, default 420 s, so the whole stays under 8 minutes).
#
# Here first (the CPU machine, with the data dir and pip):
#   printf '/.gpu_bundle/\n/.whl/\n' >> "$(git rev-parse --git-path info/exclude)"
#   python benchmarks/gpu_check.py prepare --wheels      # .gpu_bundle/ (~4 MB) and .whl/ (~10 MB)
# Then through the device tool: command `bash benchmarks/gpu_check.sh`, carry [".gpu_bundle", ".whl"],
# timeout_s 600. Its files come back from $OUT: gpu_check.json and gpu_check-<gpu>-<stamp>.json (copy the latter
# into benchmarks/results/ and run benchmarks/make_results.py).
# Anywhere: `bash benchmarks/gpu_check.sh --dry-run [--bundle DIR]` runs tiny shapes on CPU (tests use it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ " $* " != *" --dry-run "* ]] && compgen -G ".whl/*.whl" > /dev/null; then
  # the packages the device image lacks (datasets, pydantic, trl, ...), carried as wheels
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [[ " $* " != *" --dry-run "* ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
fi
exec "$PY" benchmarks/gpu_check.py run "$@"
