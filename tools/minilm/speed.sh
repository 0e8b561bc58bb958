#!/usr/bin/env bash
# Side-by-side speed on the 50 Lee documents: rquant embed vs PyTorch 2.15
# (fp32 and quantize_dynamic), 1 and 2 threads, best of REPEAT runs each,
# model load excluded, tokenization included on both sides.
# usage: tools/minilm/speed.sh [WORKDIR]   (run tools/minilm/eval.sh or fetch.sh first)
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-target/minilm}
PYTHON=${PYTHON:-/work/venv-torch/bin/python}
REPEAT=${REPEAT:-3}
bash tools/minilm/fetch.sh "$W" >/dev/null
cargo build -q --release -p rquant-cli
BIN=${CARGO_TARGET_DIR:-target}/release/rquant
PYP=$(bash tools/minilm/pydeps.sh "$W")
best_rq() { # threads args... -> best seconds
  local t=$1; shift
  for _ in $(seq "$REPEAT"); do
    "$BIN" embed --model-dir "$W/model" --threads "$t" "$@" --out "$W/speed.npy" "$W/lee.txt" 2>&1 >/dev/null |
      sed -n 's/.* in \([0-9.]*\) s:.*/\1/p'
  done | sort -g | head -1
}
best_pt() { # threads variant -> best seconds
  PYTHONPATH="$PYP" "$PYTHON" tools/minilm/torch_ref.py --model-dir "$W/model" --texts "$W/lee.txt" \
    --out "$W/speed" --threads "$1" --variants "$2" --repeat "$REPEAT" | sed -n 's/.*"seconds": \([0-9.]*\).*/\1/p'
}
echo "| 50 Lee docs (5047 tokens) | threads | PyTorch 2.15 s | rquant s | speed-up |"
echo "|---|---|---|---|---|"
for t in 1 2; do
  # int8 Linear layers only on both sides (PyTorch's dyn / dyn_pc keep fp32
  # embedding tables); --int8's quint8 tables (one lookup per token) move
  # the times within run-to-run noise.
  for row in "fp32|fp32|--fp32" "dynamic int8, per-tensor|dyn|--int8 --fp32-embeddings" \
             "dynamic int8, per-channel|dyn_pc|--int8 --per-channel --fp32-embeddings"; do
    IFS='|' read -r label var args <<<"$row"
    # shellcheck disable=SC2086
    r=$(best_rq "$t" $args)
    p=$(best_pt "$t" "$var")
    echo "| $label | $t | $p | $r | $(awk -v p="$p" -v r="$r" 'BEGIN{printf "%.2fx", p/r}') |"
  done
done
