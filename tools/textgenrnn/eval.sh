#!/usr/bin/env bash
# textgenrnn char-LSTM: next-character top-1 on the first 20 000 characters of
# gensim's lee.cor, rquant (fp32, dynamic int8 per-tensor / per-channel) and
# PyTorch 2.15 (fp32, quantize_dynamic {LSTM, Linear}), side by side.
# The converted weights are committed (data/textgenrnn); to redo the
# conversion: pip download --no-deps textgenrnn==2.0.0, tar xzf, then
#   python tools/textgenrnn/convert.py textgenrnn-2.0.0/textgenrnn/textgenrnn_weights.hdf5 OUT
# (needs h5py, numpy, safetensors from PyPI).
# Both sides run batches of 100 contexts (dynamic activation ranges per batch).
# usage: tools/textgenrnn/eval.sh [WORKDIR]   (THREADS=1 by default; PYTHON=... for torch)
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-target/minilm}
PYTHON=${PYTHON:-/work/venv-torch/bin/python}
THREADS=${THREADS:-1}
D=data/textgenrnn
bash tools/minilm/fetch.sh "$W" >/dev/null
cargo build -q --release -p rquant-models --example charlstm
BIN=${CARGO_TARGET_DIR:-target}/release/examples/charlstm
echo "== PyTorch"
"$PYTHON" tools/textgenrnn/torch_ref.py $D/textgenrnn.safetensors $D/textgenrnn_vocab.json "$W/lee.cor" --threads "$THREADS"
echo "== rquant"
for a in "" "--int8" "--int8 --per-channel"; do
  # shellcheck disable=SC2086
  "$BIN" $a --threads "$THREADS" $D/textgenrnn.safetensors $D/textgenrnn_vocab.json "$W/lee.cor"
done
