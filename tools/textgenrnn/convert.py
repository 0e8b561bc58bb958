#!/usr/bin/env python3
"""Convert textgenrnn 2.0.0's pretrained char-LSTM (Keras h5, MIT) to
safetensors with PyTorch names and layouts. Run once; needs h5py, numpy and
safetensors (all from PyPI).

usage: convert.py textgenrnn_weights.hdf5 OUT.safetensors

Names: embedding.weight [465,100]; lstm1.* / lstm2.* as a one-layer
nn.LSTM each (weight_ih_l0 [512,in], weight_hh_l0 [512,128], bias_ih_l0,
bias_hh_l0; gates i,f,g,o); attention.weight [356]; output.weight [465,356],
output.bias [465].

The layout trap: the LSTMs were saved as CuDNNLSTM. kernel [in,512],
recurrent_kernel [128,512], bias [1024] = input bias ++ recurrent bias. Within
each gate's 128-column block, the input kernel block's raw row-major bytes
ARE PyTorch's [128,in] matrix (reshape, do not transpose); the recurrent block
is already PyTorch's [128,128] as stored. Naive transposes give garbage.
"""
import sys

import h5py
import numpy as np
from safetensors.numpy import save_file

H = 128


def lstm(g, name):
    k = np.asarray(g[f"{name}/{name}/kernel:0"], dtype=np.float32)            # [in, 4H]
    r = np.asarray(g[f"{name}/{name}/recurrent_kernel:0"], dtype=np.float32)  # [H, 4H]
    b = np.asarray(g[f"{name}/{name}/bias:0"], dtype=np.float32)              # [8H]
    n_in = k.shape[0]
    w_ih = np.concatenate([np.ascontiguousarray(k[:, i * H:(i + 1) * H]).reshape(H, n_in)
                           for i in range(4)])
    w_hh = np.concatenate([np.ascontiguousarray(r[:, i * H:(i + 1) * H]) for i in range(4)])
    return {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh,
            "bias_ih_l0": b[:4 * H].copy(), "bias_hh_l0": b[4 * H:].copy()}


def main():
    src, out = sys.argv[1], sys.argv[2]
    f = h5py.File(src, "r")
    t = {"embedding.weight": np.asarray(f["embedding/embedding/embeddings:0"], np.float32)}
    for i in (1, 2):
        for k, v in lstm(f, f"rnn_{i}").items():
            t[f"lstm{i}.{k}"] = v
    t["attention.weight"] = np.asarray(f["attention/attention/attention_W:0"], np.float32)[:, 0].copy()
    t["output.weight"] = np.ascontiguousarray(np.asarray(f["output/output/kernel:0"], np.float32).T)
    t["output.bias"] = np.asarray(f["output/output/bias:0"], np.float32)
    save_file({k: np.ascontiguousarray(v) for k, v in t.items()}, out,
              metadata={"source": "textgenrnn==2.0.0 textgenrnn_weights.hdf5 (MIT, Max Woolf)",
                        "converter": "tools/textgenrnn/convert.py"})
    for k, v in t.items():
        print(k, v.shape)


if __name__ == "__main__":
    main()
