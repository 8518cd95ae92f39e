#!/usr/bin/env bash
# Everything that needs a GPU, in one go: the CUDA tests, the speed benchmark in fp32 and bf16 (32 and 256 images),
# the quality benchmark on 500 held-out ShapesCLIP scenes, the trainer's speed (the numpy and torch renderers),
# training ShapesCLIP-Deep (its minutes are the issue's GPU figure) and the quality table of the shipped Deep model
# with the layer study, all with CUDA. The first steps took about 5 minutes on an H200; the last ones are new and
# unmeasured: run them in a later call if the device time is short.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # results and logs in OUT_DIR (default: gpu_results)
#   bash benchmarks/gpu.sh OUT_DIR finetune   # only the fine-tuning runs (issue 31), about 10 minutes or more
#
# The fine-tuning part runs benchmarks.finetune with 5 seeds (0-4) on ShapesCLIP-Deep, then on the 2-layer ViT,
# then the deep model's map and training variants, then the 2-layer model's trade-off curve over the anchor and
# distillation weights, in that order of need. Finished runs are kept in OUT_DIR/finetune_runs, so a second call on
# the same warm machine goes on where the first stopped; each step ends with OUT_DIR/finetune_runs.tgz (the runs,
# one file: unpack it into .finetune_runs to rewrite the page) and OUT_DIR/finetune.md (docs/finetune.md with the
# new sections, ready to replace it). FINETUNE_DEVICE=cpu FINETUNE_ARGS="--steps 2 ..." tries the part on a CPU.
#
# A GPU machine without internet and without captum/open_clip: first download the wheels on a machine with
# internet, into .whl/ at the repository root, for the GPU machine's Python (3.12 here):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl captum==0.9.0 open_clip_torch ftfy wcwidth
#
# and carry .whl along; this script installs them into a temporary folder when captum is missing. The package is
# imported from the source tree. Each step goes on when an earlier one fails; the exit code says whether all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_results}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! python3 -c 'import captum' 2>/dev/null; then
    if ! compgen -G '.whl/*.whl' >/dev/null; then
        echo "captum is not installed and .whl/ holds no wheels: see the header of $0" >&2
        exit 2
    fi
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || exit 2
    export PYTHONPATH="$site:$PYTHONPATH"
fi
part=${2:-all}
device=${FINETUNE_DEVICE:-cuda}
if [ "$device" = cuda ]; then
    python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU"; print(torch.cuda.get_device_name(0))' || exit 2
fi

status=0
step() {  # step NAME COMMAND...: runs it, logs it to OUT/NAME.log, keeps going
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    if ! "$@" >"$out/$name.log" 2>&1; then
        status=1
        echo "   FAILED (see $out/$name.log)"
    fi
    echo "   $((SECONDS - start)) s"
    tail -n 25 "$out/$name.log"
}

if [ "$part" = finetune ]; then
    [ -f "$out/finetune.md" ] || cp docs/finetune.md "$out/finetune.md"
    # shellcheck disable=SC2086  # FINETUNE_ARGS is a list of options
    finetune() {  # finetune STEP ARGS...: one benchmark call, its runs kept, the page and the packed runs updated
        local name=$1
        shift
        step "$name" python3 -m benchmarks.finetune --device "$device" --cache "$out/finetune_runs" \
            --write "$out/finetune.md" ${FINETUNE_ARGS:-} "$@"
        tar czf "$out/finetune_runs.tgz" -C "$out" finetune_runs 2>/dev/null
    }
    finetune finetune_deep --model shapes:deep --seeds 0 1 2 3 4
    finetune finetune_shapes --model shapes --seeds 0 1 2 3 4
    finetune finetune_deep_variants --model shapes:deep --seeds 0 --variants former anchor-10 maps-1 maps-2 two-three train-maps
    finetune finetune_curve --model shapes --seeds 0 1 2 3 4 --curve 30:3 30:10 100:10
    exit $status
fi
if [ "$part" != all ]; then
    echo "unknown part '$part': all or finetune" >&2
    exit 2
fi

step cuda_tests python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_device.py
step speed_fp32 python3 -m benchmarks.speed --device cuda --dtype fp32 --repeats 5 --write "$out/speed.md"
step speed_bf16 python3 -m benchmarks.speed --device cuda --dtype bf16 --repeats 5 --write "$out/speed.md"
step speed_256_bf16 python3 -m benchmarks.speed --device cuda --dtype bf16 --repeats 5 --images 256 --prompts 10 \
    --captions 10 --metric-images 0 --no-memory --naive-pairs 1 --write "$out/speed_256.md"
step quality python3 -m benchmarks.quality --device cuda --scenes 500 --score cosine softmax --out "$out/quality.md"
step train_speed python3 -m benchmarks.train_speed --device cuda --threads 8 --steps 20 --write "$out/train_speed.md"
step train_deep python3 -m tools.train_shapes --backbone vit-deep --device cuda --threads 8 \
    --out "$out/shapes_clip_vit_deep"
step quality_deep python3 -m benchmarks.quality --model shapes:deep --device cuda --scenes 500 --score cosine softmax \
    --layer-study 6 --out "$out/quality.md"
exit $status
