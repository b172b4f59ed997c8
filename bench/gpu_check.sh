#!/usr/bin/env bash
# The GPU checks as one prepared run, for a machine with a CUDA GPU and a Python that has torch.
#
#   bash bench/gpu_check.sh --prepare    here, with network: Python 3.12 wheels of what a CUDA image of
#                                        torch lacks -> .gpu/wheels; the demo and bench voices -> .gpu/shared
#   bash bench/gpu_check.sh              there, with .gpu copied along: installs the wheels into
#                                        .gpu/site, then runs the checks below, one log each in $OUT
#                                        (or .gpu/out), and a summary of exit codes at the end
#
# Checks (about 6 minutes on one GPU, 9.5 at most: each has a time limit):
#   1. the training step in fp32, fp16 (GradScaler) and bf16 autocast, tiny and default size
#   2. the synthesizer (plain and fast paths, bf16) on the GPU
#   3. a whole conversion of 60 s and 300 s on the GPU (peak memory per length)
#   4. demo.py: the tutorial's scripts, with train.py and train_diff.py training on the GPU (on several
#      GPUs train.py runs one process per GPU over NCCL)
# DEVICE=cpu and PYTHON=... run the same checks elsewhere (to try the script itself, with QUICK=1).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
GPU_DIR=.gpu
PYTHON=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
    set -e  # .gpu/ is git-ignored: copy it along with the checkout
    shared=${SOVITS_SHARED:-$ROOT/../shared}
    rm -rf "$GPU_DIR"  # a try-out's site/, demo/ and out/ need not travel
    mkdir -p "$GPU_DIR/wheels" "$GPU_DIR/shared/data/source" "$GPU_DIR/shared/data/edge"
    for speaker in slt kal; do  # the demo's speakers, its 8 clips each: the folder stays small to copy
        mkdir -p "$GPU_DIR/shared/data/voices/$speaker"
        ls "$shared/data/voices/$speaker"/*.wav | sort | head -n 8 | xargs -I{} cp {} "$GPU_DIR/shared/data/voices/$speaker/"
    done
    cp "$shared/data/source/ked_src01.wav" "$GPU_DIR/shared/data/source/"
    cp "$shared/data/edge/long_slt_60s.wav" "$GPU_DIR/shared/data/edge/"
    # Pinned like requirements.txt; the helpers are what those need beyond a torch image's packages.
    # Left out, as no check uses them: pyworld (dio / harvest; no Python 3.12 wheel) and praat-parselmouth
    # (pm); torchfcpe only carries the FCPE weights (never imported) for the demo and the conversions.
    wheels="soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0 librosa==0.11.0 audioread==3.1.0
            decorator==5.3.2 pooch==1.9.0 platformdirs==4.14.9 torchfcpe==0.0.4"
    for wheel in $wheels; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux1_x86_64 -d "$GPU_DIR/wheels" "$wheel"
    done
    du -sh "$GPU_DIR"
    exit 0
fi

OUT=${OUT:-$GPU_DIR/out}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SOVITS_SHARED="$ROOT/$GPU_DIR/shared"
if ls "$GPU_DIR"/wheels/*.whl >/dev/null 2>&1 && [ "${SKIP_WHEELS:-0}" != 1 ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$GPU_DIR/site" "$GPU_DIR"/wheels/*.whl \
        || { echo "installing the wheels failed"; exit 1; }
    export PYTHONPATH=$ROOT/$GPU_DIR/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "${QUICK:-0}" = 1 ]; then  # the script's own try-out: fewest steps, shortest audio
    repeats=1; seconds=5,10; demo_steps=2; configs=tiny
else
    repeats=3; seconds=60,300; demo_steps=60; configs=tiny,default
fi

declare -a summary
check() {  # check NAME TIMEOUT_S COMMAND...: run with a time limit, log to $OUT/NAME.log, note the exit code
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    summary+=("$name: exit $rc")
}

check env 30 bash -c "nvidia-smi 2>/dev/null | head -15; $PYTHON -c 'import sys, torch; print(sys.version); \
print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count()); \
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no GPU\")'"
check train_step 180 "$PYTHON" bench/train_step.py --device "$DEVICE" --configs "$configs" --amp fp32,fp16,bf16 \
    --repeats "$repeats"
check synth_infer 60 "$PYTHON" bench/synth_infer.py --device "$DEVICE" --seconds 10 --repeats "$repeats" \
    --variants plain,fast,bf16
check infer_e2e 100 "$PYTHON" bench/infer_e2e.py --device "$DEVICE" --seconds "$seconds" --f0_predictor fcpe
rm -rf "$GPU_DIR/demo"
check demo 200 "$PYTHON" demo.py --workdir "$GPU_DIR/demo" --steps "$demo_steps" --diff-steps "$((demo_steps * 5))"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
