#!/usr/bin/env bash
# The Python side of the comparison: PyTorch 2.15 (PYTHON, default the
# project's torch venv) plus Hugging Face's tokenizers installed with pip into
# WORKDIR/pydeps. Prints the PYTHONPATH to use.
# usage: tools/minilm/pydeps.sh WORKDIR
set -euo pipefail
W=$1
PYTHON=${PYTHON:-/work/venv-torch/bin/python}
if ! PYTHONPATH="$W/pydeps" "$PYTHON" -c "import tokenizers" 2>/dev/null; then
  "$PYTHON" -m pip install -q --target "$W/pydeps" tokenizers==0.22.1 >&2
fi
echo "$W/pydeps"
