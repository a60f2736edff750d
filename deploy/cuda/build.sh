#!/usr/bin/env bash
# Builds the CUDA binaries (worker, trainer, evaluator with `--features cuda`, and the coordinator)
# on a machine WITHOUT a GPU, following ../shared/notes/cuda-build.md: a CUDA 13.0 toolchain from
# PyPI (all pinned to 13.0), unversioned link names for its libraries, a link stub for libcuda
# (the driver provides the real libcuda.so.1 on the GPU host), then cargo with the CUDA env.
#
#   bash deploy/cuda/build.sh            # -> dist/cuda/{coordinator,worker,trainer,evaluator}
#
# Environment: CUDA_COMPUTE_CAP (default 90 = H100/H200; 80 = A100, 89 = L4/L40), DRLLM_CACHE
# (toolchain cache, default ~/.cache/drllm), CARGO_TARGET_DIR (default <cache>/target-cuda, apart
# from the CPU build so neither rebuilds the other), DIST (default dist/cuda).
# On the GPU host: a CUDA 13 driver (R580+) and the CUDA 13 libraries libcublas.so.13,
# libcublasLt.so.13, libcudart.so.13, libcurand.so.10 on LD_LIBRARY_PATH (e.g. from
# `pip install nvidia-cublas==13.0.2.14 nvidia-cuda-runtime==13.0.96 nvidia-curand==10.4.0.35`,
# folder site-packages/nvidia/cu13/lib), then `worker run --device cuda ...`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${DRLLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drllm}"
VENV="$CACHE/cu130"
LINKDIR="$CACHE/cu130-link"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target-cuda}"
DIST="${DIST:-$ROOT/dist/cuda}"
CAP="${CUDA_COMPUTE_CAP:-90}"

python=$(command -v python3 || true)
[ -n "$python" ] || { echo "error: python3 with pip and venv is needed for the CUDA toolchain wheels" >&2; exit 1; }

# 1. The toolchain, every wheel pinned to CUDA 13.0 (a newer nvvm emits PTX a 13.0 driver rejects).
if [ ! -x "$VENV/bin/pip" ]; then
  "$python" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 \
  nvidia-cuda-nvrtc==13.0.88 nvidia-curand==10.4.0.35
N=$(echo "$VENV"/lib/python3.*/site-packages/nvidia/cu13)
[ -x "$N/bin/nvcc" ] || { echo "error: nvcc not found under $N/bin" >&2; exit 1; }
echo "CUDA toolkit: $N ($("$N/bin/nvcc" --version | tail -1))" >&2

# 2. Unversioned link names (the wheels ship only libX.so.NN).
rm -rf "$LINKDIR" && mkdir -p "$LINKDIR"
for lib in "$N"/lib/lib*.so.*; do
  base=$(basename "$lib")
  ln -sf "$lib" "$LINKDIR/${base%%.so.*}.so"
done

# 3. A libcuda stub with the driver's soname, exporting every function cudarc binds.
cargo fetch --manifest-path "$ROOT/Cargo.toml" -q
CUDARC=$(cargo metadata --manifest-path "$ROOT/Cargo.toml" --format-version 1 --all-features 2>/dev/null \
  | "$python" -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="cudarc"))')
SYS="$(dirname "$CUDARC")/src/driver/sys/mod.rs"
[ -f "$SYS" ] || { echo "error: cudarc's driver bindings not found at $SYS" >&2; exit 1; }
grep -o "fn cu[A-Za-z0-9_]*" "$SYS" | sed 's/fn //' | sort -u | awk '{print "void "$1"(void){}"}' > "$LINKDIR/stub.c"
gcc -shared -fPIC -o "$LINKDIR/libcuda.so" -Wl,-soname,libcuda.so.1 "$LINKDIR/stub.c"

# 4. Two builds: the coordinator without CUDA (built together, cargo would unify drllm-core's
# features and link the coordinator against libcuda, so it could not start on a node without a
# GPU driver), then the three binaries that run the model, with CUDA.
cd "$ROOT"
cargo build --release -p coordinator
PATH="$N/bin:$PATH" CUDARC_CUDA_VERSION=13000 CUDA_ROOT="$N" CUDA_PATH="$N" \
  CUDA_TOOLKIT_ROOT_DIR="$N" LIBRARY_PATH="$LINKDIR" CUDA_COMPUTE_CAP="$CAP" \
  cargo build --release --features worker/cuda,trainer/cuda,evaluator/cuda \
  -p worker -p trainer -p evaluator

mkdir -p "$DIST"
for b in coordinator worker trainer evaluator; do
  cp "$CARGO_TARGET_DIR/release/$b" "$DIST/$b"
done
echo "CUDA binaries (compute capability $CAP) in $DIST:" >&2
ls -la "$DIST" >&2
readelf -d "$DIST/worker" | grep NEEDED >&2
if readelf -d "$DIST/coordinator" | grep -q 'libcuda'; then
  echo "error: the coordinator links libcuda" >&2; exit 1
fi
