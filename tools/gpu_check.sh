#!/usr/bin/env bash
# The first GPU session's one command (../shared/GPU.md): everything the CUDA paths need to prove, in order,
# each step bounded in time, each result one JSON line in $OUT/gpu_check.json (its figures in
# $OUT/<step>-<gpu|cpu>.json, every step's output in $OUT/logs.tar.gz: 8 files at most).
#
#   bash tools/gpu_check.sh                  # $OUT defaults to bench/results/gpu-check-<gpu|cpu>/
#   OUT=/tmp/check bash tools/gpu_check.sh
#
# 1 env        nvidia-smi, torch/CUDA/cuDNN versions, device name, capability, bf16 support, the plan
# 2 gpu-tests  python -m pytest -m gpu (tests/test_gpu.py and the other gpu-marked tests)
# 3 encode     a smoke encode of tests/data/gpu_check.npz on the device, at the plan's precision ("auto")
#   eval       latentds eval on the device, of that file, against the .npz's test split
#   torchrun   the same encode as 2 ranks on one device (torchrun --standalone --nproc-per-node 2)
#   same-bits  the 2-rank file against the 1-process file, tensor by tensor (bit-equal, or max |difference|)
# 4 speed      decode img/s fp32 vs the plan (paper-size generator, batch 256 and 1,024), one step of each
#              encode stage and of eval, fp32 vs the plan, at the paper and fast presets' sizes
# 5 estimate   whole-set CIFAR-10 hours from those steps: the paper preset and the fast preset (the fastest path)
#
# On a GPU the whole stays under 8 minutes (the sum of the step limits is 470 s). Without CUDA the same steps
# run on the CPU at toy sizes (a check that nothing rotted: CI runs it so), the gpu tests skip with their
# reason, and the figures are not figures. Exit 0 when every step that ran passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
# A machine without the project's packages (a GPU image with torch but no zstandard, say) takes them from
# wheels in .whl/ (ignored by git; carried to the machine), installed beside, not into, its Python.
if [ -d .whl ] && ! "$PY" -c "import latentds.format" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-check-site .whl/*.whl \
        && export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    DEV=cuda; KIND=gpu
else
    DEV=cpu; KIND=cpu
fi
OUT=${OUT:-bench/results/gpu-check-$KIND}
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
LOGS="$OUT/logs"  # packed into $OUT/logs.tar.gz at the end: $OUT keeps 8 files (what a device run returns)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RESULTS="$OUT/gpu_check.json"
: > "$RESULTS"
DATA=tests/data/gpu_check.npz
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1  # one thread per process: 1 process and 2 ranks round alike on a CPU
unset LATENTDS_PRECISION                      # "auto": the plan's precision, as a user gets it
FAILED=0
START=$(date +%s)

# record STEP STATUS SECONDS RC NOTE: one JSON line (NOTE must not contain double quotes)
record() {
    printf '{"step": "%s", "status": "%s", "seconds": %s, "rc": %s, "device": "%s", "log": "%s.log", "note": "%s"}\n' \
        "$1" "$2" "$3" "$4" "$DEV" "logs/$1" "$5" >> "$RESULTS"
    printf '%-10s %-8s %5ss  %s\n' "$1" "$2" "$3" "$5"
}

# step NAME LIMIT_S NOTE CMD...: run CMD under timeout, log to $LOGS/NAME.log, record the outcome
step() {
    local name=$1 limit=$2 note=$3 t0 rc status
    shift 3
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=passed ;;
        124|137) status=timeout; note="over ${limit} s; $note" ;;
        *) status=failed ;;
    esac
    [ "$status" = passed ] || FAILED=1
    record "$name" "$status" "$(( $(date +%s) - t0 ))" "$rc" "$note"
}

skip() { record "$1" skipped 0 0 "$2"; }

# lim GPU_S CPU_S: a step's bound on this machine (a busy 2-core CI machine takes several times a quiet one's)
lim() { if [ "$DEV" = cuda ]; then echo "$1"; else echo "$2"; fi; }

# The smoke encode: tiny GAN and schedules, 4 classes x 6 selected images in units of 3 (8 work units).
GAN_ITS=40; [ "$DEV" = cuda ] || GAN_ITS=12  # the CPU run is a check that nothing rotted, in CI's 2 minutes
ENCODE=(encode "$DATA" --preset smoke --device "$DEV" --quiet
        --set gan.iterations=$GAN_ITS --set gan.ema_start=6 --set gan.checkpoint_every=6 --set gan.batch_size=16
        --set classifier.epochs=1 --set invert.iterations=5 --set condense.iterations=5 --set condense.batch_syn=4
        --set condense.batch_real=16 --set condense.eval_nets=1 --set ipc=6 --set subset_size=3
        --set invert.units_per_pass=1)  # 1 process and 2 ranks then run every inversion unit in the same passes

echo "gpu_check: device $DEV, results in $OUT"
# 1
if command -v nvidia-smi > /dev/null; then nvidia-smi > "$LOGS/nvidia-smi.log" 2>&1; fi
step env "$(lim 30 60)" "versions, device, plan: env-$KIND.json" "$PY" tools/gpu_check.py env --device "$DEV" --json "$OUT/env-$KIND.json"
# 2
GPU_TEST_FILES=$(grep -l "mark.gpu" tests/test_*.py)  # only these: other modules may import what a GPU image lacks
if [ "$DEV" = cuda ]; then
    step gpu-tests 120 "pytest -m gpu: gpu-tests.xml" "$PY" -m pytest -q -m gpu -rfEs -p no:cacheprovider \
        -o junit_logging=system-out --junitxml="$OUT/gpu-tests.xml" $GPU_TEST_FILES  # the xml keeps the printed figures
else
    step gpu-tests 120 "no CUDA: every gpu test skips, with its reason (see the log)" "$PY" -m pytest -q -m gpu -rs \
        -p no:cacheprovider $GPU_TEST_FILES
fi
# 3
step encode "$(lim 50 150)" "smoke encode of $DATA at the plan's precision" "$PY" -m latentds "${ENCODE[@]}" "$WORK/one.lds"
if [ -f "$WORK/one.lds" ]; then
    step eval "$(lim 40 120)" "2 ConvNet-3 seeds, 3 epochs, on the .npz's test split: eval-$KIND.json" "$PY" -m latentds eval \
        "$WORK/one.lds" --test "$DATA" --device "$DEV" --epochs 3 --seeds 2 --quiet --json "$OUT/eval-$KIND.json"
    step torchrun "$(lim 80 200)" "the same encode as 2 ranks on one $DEV (torchrun --standalone)" "$PY" -m torch.distributed.run \
        --standalone --nproc-per-node 2 -m latentds "${ENCODE[@]}" "$WORK/two.lds"
    if [ -f "$WORK/two.lds" ]; then
        step same-bits "$(lim 10 60)" "2 ranks vs 1 process, every tensor: same-bits-$KIND.json" "$PY" tools/gpu_check.py compare \
            "$WORK/one.lds" "$WORK/two.lds" --json "$OUT/same-bits-$KIND.json"
    else
        skip same-bits "no torchrun output"
    fi
else
    skip eval "no encode output"; skip torchrun "no encode output"; skip same-bits "no encode output"
fi
# 4, 5
if [ "$DEV" = cuda ]; then
    step speed 125 "decode and stage steps, fp32 vs the plan: speed-$KIND.json" "$PY" tools/gpu_check.py speed \
        --device cuda --json "$OUT/speed-$KIND.json"
else
    step speed 200 "no CUDA: toy sizes on the CPU, a check that it runs (not figures)" "$PY" tools/gpu_check.py speed \
        --device cpu --quick --json "$OUT/speed-$KIND.json"
fi
if [ -f "$OUT/speed-$KIND.json" ]; then
    note="whole-set CIFAR-10 hours: estimate-$KIND.json"
    [ "$DEV" = cuda ] || note="no CUDA: computed from the toy CPU steps, a check that it runs (not figures)"
    step estimate "$(lim 15 60)" "$note" "$PY" tools/gpu_check.py estimate "$OUT/speed-$KIND.json" --json "$OUT/estimate-$KIND.json"
else
    skip estimate "no speed record"
fi

tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
echo "gpu_check: $(( $(date +%s) - START )) s in all; $(grep -c '"passed"' "$RESULTS") passed, $(grep -c '"failed"\|"timeout"' "$RESULTS") failed, $(grep -c '"skipped"' "$RESULTS") skipped ($RESULTS)"
exit $FAILED
