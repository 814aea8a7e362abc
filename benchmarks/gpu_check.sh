#!/usr/bin/env bash
# Every GPU figure the project claims, in one run on a CUDA machine (under 8 minutes on one
# modern GPU): captioning throughput against the per-tile recipe at batch 32 with bf16 for
# BLIP and GIT, training steps with autocast against fp32, FAISS search on the GPU, and the
# daemon on a small drop. Each step prints its table and its ratio= line; the script stops
# at the first failure with the reason and a non-zero exit. Without CUDA it stops at once,
# saying so.
#
#   bash benchmarks/gpu_check.sh                     # on the GPU machine, from the repository root
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh   # the same steps at toy sizes on a CPU (a smoke test)
#
# Figures go to benchmarks/README.md with the card they came from (the first lines printed).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
device="${GPU_CHECK_DEVICE:-cuda}"
work="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT

fail() { echo "gpu_check: FAILED: $*" >&2; exit 1; }

# step NAME COMMAND...: run it, show its output, insist on a final ratio= line.
step() {
    local name="$1"; shift
    echo "=== $name"
    local log="$work/step.log"
    "$@" 2>&1 | tee "$log"
    local status="${PIPESTATUS[0]}"
    [[ "$status" -eq 0 ]] || fail "$name: exited with $status (command: $*)"
    local ratio
    ratio="$(grep -E '^ratio=' "$log" | tail -n 1)"
    [[ -n "$ratio" ]] || fail "$name: printed no ratio= line"
    echo "$name: $ratio"
}

case "$device" in
    cuda)
        "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
            || fail "torch sees no CUDA device on $(hostname); run this on a GPU machine (GPU_CHECK_DEVICE=cpu for a smoke run)"
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
            || "$python" -c 'import torch; print(torch.cuda.get_device_name(0))'
        "$python" -c 'import sys, faiss; n = faiss.get_num_gpus(); print(f"faiss {faiss.__version__} sees {n} GPU(s)"); sys.exit(0 if n else 1)' \
            || fail "FAISS sees no GPU (install faiss-gpu, as pyproject.toml asks on linux x86_64)"
        caption=(--device cuda --precision bf16 --batch-size 32 --tiles 128 --tokens 32)
        train=(--device cuda --preset base --batch-size 16 --steps 20)
        faiss=(--sizes 100000 --data clustered --index ivf)
        daemon=(--frames 2000 --batch-size 32)
        ;;
    cpu)
        echo "GPU_CHECK_DEVICE=cpu: a smoke run of every step at toy sizes; no figure below is a GPU figure"
        caption=(--device cpu --tiny --quick --tiles 2 --tokens 3 --beams 2 --batch-size 2)
        train=(--device cpu --preset tiny --batch-size 2 --steps 1)
        faiss=(--sizes 2000 --data clustered --index ivf --queries 64 --single-queries 8)
        daemon=(--frames 8 --tokens 3 --beams 1 --batch-size 4)
        ;;
    *) fail "GPU_CHECK_DEVICE must be cuda or cpu, not '$device'" ;;
esac
"$python" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'

step "captioning throughput, BLIP" "$python" "$here/caption_throughput.py" "${caption[@]}"
step "captioning throughput, GIT" "$python" "$here/caption_throughput.py" --arch git "${caption[@]}"
step "training steps, autocast vs fp32" "$python" "$here/train_autocast.py" "${train[@]}"
step "FAISS search (on the GPU when FAISS sees one)" "$python" "$here/faiss_scale.py" "${faiss[@]}"
step "daemon on a small drop" "$python" "$here/daemon_load.py" "${daemon[@]}"
echo "gpu_check: every step passed on $device"
