"""Shared helpers for the rquant golden-case generator (see README.md)."""
import json
import os
from fractions import Fraction

import numpy as np
from safetensors.numpy import save_file

f32 = np.float32
TORCH_SRC = None  # set by gen_golden.py: "torch 2.15.0 engine=x86 ..."
OUT_ROOT = None
COUNTS = {}

# The ops this generator writes cases for. Each must be in the conformance
# runner's op table: gen_golden.py checks them against
# `cargo xtask conformance --list-ops` before writing anything, and
# xtask/tests/op_table.rs checks this list against the table and tests/golden.
# CONFORMANCE.md's ops come first, from "add_scalar" on rquant's own (the
# module layer's ops and the 2-bit embedding bag; tests/golden/README.md).
# (op_table.rs parses this tuple: names only, no comments inside.)
OPS = (
    "quantize_per_tensor",
    "quantize_per_channel",
    "dequantize_per_tensor",
    "dequantize_per_channel",
    "observer",
    "choose_qparams_dynamic",
    "fake_quantize_per_tensor",
    "fake_quantize_per_channel",
    "linear",
    "linear_dynamic",
    "linear_dynamic_fp16",
    "conv2d",
    "add",
    "add_relu",
    "mul",
    "relu",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "hardswish",
    "sigmoid",
    "cat",
    "mul_relu",
    "relu6",
    "hardtanh",
    "leaky_relu",
    "elu",
    "hardsigmoid",
    "tanh",
    "gelu",
    "layer_norm",
    "group_norm",
    "instance_norm",
    "batch_norm2d",
    "batch_norm2d_relu",
    "conv1d",
    "conv3d",
    "conv_transpose2d",
    "upsample_nearest2d",
    "upsample_bilinear2d",
    "constant_pad2d",
    "channel_shuffle",
    "mean",
    "embedding_bag_byte",
    "embedding_bag_4bit",
    "matmul",
    "softmax",
    "add_scalar",
    "add_scalar_relu",
    "mul_scalar",
    "mul_scalar_relu",
    "cat_relu",
    "prelu",
    "celu",
    "threshold",
    "clamp",
    "max_pool1d",
    "max_pool3d",
    "avg_pool3d",
    "adaptive_avg_pool3d",
    "conv_transpose1d",
    "conv_transpose3d",
    "batch_norm1d",
    "batch_norm1d_relu",
    "batch_norm3d",
    "batch_norm3d_relu",
    "embedding_bag_2bit",
)


def parse_list_ops(text):
    """{op: state} from `cargo xtask conformance --list-ops` (name, then
    `implemented` or `pending`, then free text)."""
    table = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            table[parts[0]] = parts[1]
    return table


def check_ops(table):
    """Errors for generator ops the runner does not know (their cases would
    fail as unknown ops), and the runner's implemented ops this generator
    writes no case for (a note: the shared examples may be their only cases)."""
    errors = ["op %r is not in the runner's op table" % op for op in OPS if op not in table]
    missing = sorted(op for op, st in table.items() if st == "implemented" and op not in OPS)
    return errors, missing


def save_case(op, name, inputs, outputs, attrs, source, atol=None, rtol=None):
    assert op in OPS, "op %r is not in common.OPS (the ops checked against the runner)" % op
    tensors = {}
    # np.require keeps 0-d arrays 0-d (np.ascontiguousarray makes them 1-d).
    for k, v in inputs.items():
        tensors["in." + k] = np.require(v, requirements="C")
    for k, v in outputs.items():
        tensors["out." + k] = np.require(v, requirements="C")
    case = {"op": op, "attrs": attrs, "source": source}
    if atol is not None:
        case["atol"] = float(atol)
        case["rtol"] = float(rtol or 0.0)
    d = os.path.join(OUT_ROOT, op)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name + ".safetensors")
    assert not os.path.exists(path), "duplicate case name " + path
    save_file(tensors, path, metadata={"case": json.dumps(case, sort_keys=True)})
    COUNTS[op] = COUNTS.get(op, 0) + 1


def rne(a):
    """Round half to even (numpy's rint is half-to-even)."""
    return np.rint(a)


def bits_equal(a, b):
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype == np.float32:
        return bool((a.view(np.uint32) == b.astype(np.float32).view(np.uint32)).all())
    return bool((a == b).all())


def round_fraction_to_f32(r):
    """Correctly round an exact rational to float32 (half to even)."""
    d = float(r)  # correctly rounded to f64
    f = f32(d)
    cands = [np.nextafter(f, f32(-np.inf)), f, np.nextafter(f, f32(np.inf))]
    best = None
    for c in cands:
        if not np.isfinite(c):
            continue
        err = abs(Fraction(float(c)) - r)
        if best is None or err < best[0] or (err == best[0] and (int(c.view(np.uint32)) & 1) == 0 and (int(best[1].view(np.uint32)) & 1) == 1):
            best = (err, c)
    return best[1]


def fma_f32(a, b, c):
    """Exact single-rounding fused multiply-add on float32 arrays (a*b + c)."""
    a = np.asarray(a, dtype=f32)
    b = np.asarray(b, dtype=f32)
    c = np.asarray(c, dtype=f32)
    a, b, c = np.broadcast_arrays(a, b, c)
    p = a.astype(np.float64) * b.astype(np.float64)  # exact: 24+24 bits <= 53
    cc = c.astype(np.float64)
    s = p + cc
    # TwoSum error: zero iff s is exact, then one rounding to f32 is correct
    bb = s - p
    err = (p - (s - bb)) + (cc - bb)
    out = s.astype(f32)
    idx = np.argwhere(err != 0)
    for i in idx:
        i = tuple(i)
        out[i] = round_fraction_to_f32(Fraction(float(p[i])) + Fraction(float(cc[i])))
    return out


def quantize_pt(x, scale, zp, qmin, qmax):
    """PyTorch per-tensor quantize: clamp(zp + rne(x * (1.0f/(float)scale)))."""
    inv = f32(1.0) / f32(scale)
    v = rne((np.asarray(x, dtype=f32) * inv).astype(f32)).astype(np.float64) + zp
    return np.clip(v, qmin, qmax).astype(np.int64)


def choose_qparams(xmin, xmax, qmin, qmax, reduce_range):
    """PyTorch's C++ quant_utils::ChooseQuantizationParams (no sparsity, no pow2)."""
    SMALL = float(f32(6.1e-5))
    if reduce_range:
        qmin = qmin // 2
        qmax = qmax // 2
    mn = f32(min(f32(xmin), f32(0.0)))
    mx = f32(max(f32(xmax), f32(0.0)))
    scale = (float(mx) - float(mn)) / (qmax - qmin)
    if f32(scale) == 0.0 or np.isinf(f32(1.0) / f32(scale)):
        scale = 0.1
    if scale < SMALL:
        org = f32(scale)
        scale = SMALL
        if mn == 0.0:
            mx = f32(f32(SMALL) * f32(qmax - qmin))
        elif mx == 0.0:
            mn = f32(-f32(SMALL) * f32(qmax - qmin))
        else:
            amp = f32(f32(SMALL) / org)
            mn = f32(mn * amp)
            mx = f32(mx * amp)
    zfm = qmin - float(mn) / scale
    zfM = qmax - float(mx) / scale
    efm = abs(qmin) - abs(float(mn) / scale)
    efM = abs(qmax) - abs(float(mx) / scale)
    iz = zfm if efm < efM else zfM
    if iz < qmin:
        z = qmin
    elif iz > qmax:
        z = qmax
    else:
        z = int(np.rint(iz))
    return scale, z


def bits_equal_elementwise(a, b):
    """Elementwise bitwise equality of two float32 arrays."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    return a.view(np.uint32) == b.view(np.uint32)
