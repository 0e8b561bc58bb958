#!/usr/bin/env python3
"""PyTorch 2.15 reference numbers for the MNIST CNN (run once; CI never needs torch).

    /path/to/venv/bin/python tools/mnist/torch_reference.py data/mnist [FULL_IDX_DIR] > tools/mnist/torch_reference.json

Eager-mode workflows exactly as rquant's demo runs them: QuantStub → model →
DeQuantStub; fuse (conv, relu) ×3 and (linear, relu); x86 qconfig; calibrate
on the first 1000 training images in batches of 100; convert. Prints JSON:
accuracies on the committed subset (and on the full test set when given),
each layer's output qparams, and the int8 outputs of the first images.
"""
import json
import struct
import sys

import numpy as np
import safetensors.torch as st
import torch
import torch.nn as nn
from torch.ao import quantization as tq

torch.backends.quantized.engine = "x86"
torch.manual_seed(0)


def read_idx(path):
    data = open(path, "rb").read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def load(d, kind):
    x = read_idx(f"{d}/{kind}-images-idx3-ubyte").astype(np.float32)
    y = read_idx(f"{d}/{kind}-labels-idx1-ubyte").astype(np.int64)
    x = (x / 255.0 - 0.1307) / 0.3081
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv_layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2))
        self.flatten = nn.Flatten()
        self.fc_layers = nn.Sequential(nn.Linear(1152, 256), nn.ReLU(), nn.Linear(256, 10))
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.fc_layers(self.flatten(self.conv_layers(self.quant(x)))))


def fp32_model(weights):
    m = CNN()
    m.load_state_dict(st.load_file(weights), strict=False)
    return m.eval()


def predict(m, x):
    with torch.no_grad():
        return torch.cat([m(x[i:i + 500]) for i in range(0, len(x), 500)])


def static(weights, calib, qconfig):
    m = fp32_model(weights)
    tq.fuse_modules(m, [["conv_layers.0", "conv_layers.1"], ["conv_layers.3", "conv_layers.4"],
                        ["conv_layers.6", "conv_layers.7"], ["fc_layers.0", "fc_layers.1"]], inplace=True)
    m.qconfig = qconfig
    tq.prepare(m, inplace=True)
    with torch.no_grad():
        for i in range(0, len(calib), 100):
            m(calib[i:i + 100])
    return tq.convert(m, inplace=False)


def qparams(m):
    out = {}
    for name, mod in m.named_modules():
        if hasattr(mod, "scale") and hasattr(mod, "zero_point") and not isinstance(mod, nn.Sequential):
            out[name] = [float(mod.scale), int(mod.zero_point)]
    return out


def main():
    d = sys.argv[1]
    weights = f"{d}/mnist_cnn.safetensors"
    calib, _ = load(d, "train")
    sets = {"subset": load(d, "t10k")}
    if len(sys.argv) > 2:
        sets["full"] = load(sys.argv[2], "t10k")
    fp32 = fp32_model(weights)
    per_tensor_qc = tq.QConfig(activation=tq.HistogramObserver.with_args(reduce_range=True),
                               weight=tq.default_weight_observer)
    models = {
        "fp32": fp32,
        "dynamic": tq.quantize_dynamic(fp32_model(weights), {nn.Linear}, dtype=torch.qint8),
        "static_per_channel": static(weights, calib, tq.get_default_qconfig("x86")),
        "static_per_tensor": static(weights, calib, per_tensor_qc),
    }
    res = {"torch": torch.__version__, "engine": "x86", "calibration": "first 1000 training images, batches of 100"}
    for sname, (x, y) in sets.items():
        ref = predict(fp32, x).argmax(1)
        for mname, m in models.items():
            p = predict(m, x).argmax(1)
            res[f"{sname}/{mname}"] = {
                "accuracy": float((p == y).float().mean()),
                "agreement_with_fp32": float((p == ref).float().mean()),
            }
    x, _ = sets["subset"]
    for mname in ("static_per_channel", "static_per_tensor"):
        m = models[mname]
        res[f"{mname}/qparams"] = qparams(m)
        with torch.no_grad():
            q = m.fc_layers(m.flatten(m.conv_layers(m.quant(x[:8]))))
        res[f"{mname}/first8_int"] = q.int_repr().tolist()
    with torch.no_grad():
        res["fp32/first8_logits"] = fp32(x[:8]).tolist()
        res["dynamic/first8_logits"] = models["dynamic"](x[:8]).tolist()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
