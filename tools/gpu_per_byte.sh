#!/usr/bin/env bash
# The second call of a GPU session (after tools/gpu_check.sh): the per-byte benchmark's whole-set cells on the
# GPU with the same harness as the CPU records (bench/per_byte.py --device cuda), so that the whole-set encode
# is measured in minutes there and its accuracy next to the JPEG it competes with.
#
#   mkdir -p .gpu-data && cp -r ../shared/datasets/cifar10-jpeg .gpu-data/     # 55 MB, ignored by git
#   device run: bash tools/gpu_per_byte.sh   carry [".whl", ".gpu-data"]       # OUT defaults to bench/results/gpu-per-byte
#
# Cells, in order, each resumable: lds_int8@all (fast-preset encode of the 50,000 images + 3 ConvNet-3 seeds),
# jpeg_mosaic_q20@all, real_all (the ceiling). The whole is bounded by LIMIT seconds (default 500); what finished
# is in $OUT/per-byte-gpu.{json,md,png}, the encode's log in $OUT/encode.log, the .lds in $OUT/per-byte-sets/.
# Without CUDA it lists the cells it would run and exits 0 (the harness itself is tested by tests/test_per_byte.py).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -d .whl ] && ! "$PY" -c "import latentds.format" 2>/dev/null; then  # as in tools/gpu_check.sh
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-check-site .whl/*.whl \
        && export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
DATA=${DATA:-.gpu-data/cifar10-jpeg}
OUT=${OUT:-bench/results/gpu-per-byte}
LIMIT=${LIMIT:-500}
CELLS=(lds_int8 jpeg_mosaic_q20 real_all)
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_per_byte: no CUDA here; on a GPU it would run:"
    exec "$PY" bench/per_byte.py --plan --budgets all --only "${CELLS[@]}"
fi
if [ ! -d "$DATA/train" ]; then
    echo "gpu_per_byte: no CIFAR-10 image folder at $DATA (copy ../shared/datasets/cifar10-jpeg there and carry it)" >&2
    exit 2
fi
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'cp "$WORK"/encode/*/encode.log "$OUT/encode.log" 2>/dev/null; rm -rf "$WORK"' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
timeout --kill-after=10 "$LIMIT" "$PY" bench/per_byte.py --device cuda --data "$DATA" --budgets all \
    --only "${CELLS[@]}" --work "$WORK" --out "$OUT" 2>&1 | tail -n 40
echo "gpu_per_byte: rc ${PIPESTATUS[0]}; records in $OUT"
