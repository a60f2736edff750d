#!/usr/bin/env bash
# Trainer: wall time of the one feature pass (teacher-forced router inputs, cache cold) against
# all training epochs, on a folder (or file) of search records. Prints the trainer's summary JSON,
# whose `epochs_over_feature_pass` is the ratio.
#
#   bash bench/trainer.sh RECORDS [EPOCHS=25] [more trainer flags…]
set -euo pipefail
RECORDS="${1:?usage: bench/trainer.sh RECORDS [EPOCHS] [flags]}"
EPOCHS="${2:-25}"
shift $(( $# >= 2 ? 2 : 1 ))
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"
cargo build --release -q -p trainer
bash scripts/fetch-model.sh >&2
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
"$TARGET/release/trainer" train --records "$RECORDS" --out "$DIR/ckpt" --epochs "$EPOCHS" \
  --cache-dir "$DIR/cache" "$@"
