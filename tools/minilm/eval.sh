#!/usr/bin/env bash
# all-MiniLM-L6-v2 on gensim's Lee corpus: rquant (fp32, dynamic int8 variants)
# against PyTorch 2.15 (fp32, quantize_dynamic per-tensor and per-channel,
# each with fp32 or quint8 embedding tables).
# Metrics: Spearman of cosine similarity vs the human ratings over the 1225
# pairs, and per-document cosine to PyTorch fp32.
# usage: tools/minilm/eval.sh [WORKDIR]   (default target/minilm; PYTHON=... for torch)
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-target/minilm}
PYTHON=${PYTHON:-/work/venv-torch/bin/python}
THREADS=${THREADS:-2}
bash tools/minilm/fetch.sh "$W"
cargo build -q --release -p rquant-cli
BIN=${CARGO_TARGET_DIR:-target}/release/rquant
PYP=$(bash tools/minilm/pydeps.sh "$W")
echo "== PyTorch"
PYTHONPATH="$PYP" "$PYTHON" tools/minilm/torch_ref.py --model-dir "$W/model" --texts "$W/lee.txt" \
  --out "$W/torch" --threads "$THREADS" --variants fp32,dyn,dyn_pc,dyn_emb,dyn_pc_emb
echo "== rquant"
run() {
  local name=$1; shift
  "$BIN" embed --model-dir "$W/model" --threads "$THREADS" "$@" --out "$W/rquant.$name.npy" "$W/lee.txt"
}
run fp32 --fp32
# int8 Linear layers, fp32 embedding tables (as PyTorch's dyn / dyn_pc)
run int8 --int8 --fp32-embeddings
run int8_rr --int8 --reduce-range --fp32-embeddings
run int8_pc --int8 --per-channel --fp32-embeddings
run int8_pc_rr --int8 --per-channel --reduce-range --fp32-embeddings
# --int8's default: the embedding tables quint8 per row too (dyn_emb / dyn_pc_emb)
run int8_emb --int8
run int8_rr_emb --int8 --reduce-range
run int8_pc_emb --int8 --per-channel
run int8_pc_rr_emb --int8 --per-channel --reduce-range
echo "== metrics (cosine against PyTorch fp32)"
"$PYTHON" tools/minilm/metrics.py "$W/similarities0-1.txt" "$W/torch.fp32.npy" \
  "$W"/torch.{fp32,dyn,dyn_pc,dyn_emb,dyn_pc_emb}.npy \
  "$W"/rquant.{fp32,int8,int8_rr,int8_pc,int8_pc_rr,int8_emb,int8_rr_emb,int8_pc_emb,int8_pc_rr_emb}.npy | grep -v '^{'
