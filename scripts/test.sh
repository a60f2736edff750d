#!/usr/bin/env bash
# README's test command: sets up what the tests need on a fresh machine, then runs every test.
#   - the default model (scripts/fetch-model.sh, cached in ~/.cache/drllm);
#   - a Python venv (~/.cache/drllm/venv, or $DRLLM_VENV) with pyarrow (the records must read in
#     the Python ecosystem), torch and safetensors (the official Dr.LLM router block reads our
#     routers), transformers and gguf (real-shaped checkpoints for the engine's parity tests) and
#     scipy (the certificates' p-values) and openai (the client `evaluator serve` must answer, streaming
#     included). torch comes as the CPU wheel where pip can reach
#     download.pytorch.org, else from PyPI.
# A test whose prerequisite is missing fails and says how to get it. DRLLM_ALLOW_SKIP=1 skips such
# tests instead, and the run ends with the count of skipped tests. Extra arguments go to
# `cargo test --workspace` (e.g. `bash scripts/test.sh -p coordinator`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/drllm/target}"

bash scripts/fetch-model.sh

VENV="${DRLLM_VENV:-$HOME/.cache/drllm/venv}"
MODULES="pyarrow torch safetensors transformers gguf scipy openai"
# System packages are visible to the venv: what the machine has is not installed twice.
if [ -x "$VENV/bin/python3" ] || python3 -m venv --system-site-packages "$VENV" 2>/dev/null; then
  PY="$VENV/bin/python3"
  export PATH="$VENV/bin:$PATH"
else
  echo "test.sh: python3 cannot make a venv (Debian: apt install python3-venv); installing into the system python3" >&2
  rm -rf "$VENV"
  PY=python3
fi
missing() { "$PY" - "$@" <<'PY'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PY
}
pip() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }
if [ -n "$(missing torch)" ]; then
  echo "test.sh: installing torch (CPU wheel where reachable) into $VENV" >&2
  pip --index-url https://download.pytorch.org/whl/cpu torch 2>/dev/null || pip torch
fi
if [ -n "$(missing $MODULES)" ]; then
  echo "test.sh: installing $(missing $MODULES) into $VENV" >&2
  pip $(missing $MODULES)
fi

SKIP_LOG="$(mktemp)"
trap 'rm -f "$SKIP_LOG"' EXIT
export DRLLM_SKIP_LOG="$SKIP_LOG"
status=0
cargo test --workspace "$@" || status=$?
skipped=$(wc -l < "$SKIP_LOG")
echo "test.sh: $skipped tests skipped on request (DRLLM_ALLOW_SKIP / DRLLM_SKIP_PYTHON_TESTS)"
if [ "$skipped" -gt 0 ]; then sed 's/^/  skipped: /' "$SKIP_LOG"; fi
exit "$status"
