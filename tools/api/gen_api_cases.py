#!/usr/bin/env python3
"""Reference data for rquant-nn's module-level API tests (crates/nn/tests/api_*.rs),
from torch 2.15.0.

Usage:  python tools/api/gen_api_cases.py [--out crates/nn/tests/data/api]

Each case is one small safetensors file: the float weights and inputs of a
small model, what PyTorch's eager workflow made of it (quantized weight codes
and qparams, observed activation qparams, converted outputs, QAT gradients,
...), and a JSON string `meta` with the non-tensor facts. Fixed seeds: the
output is byte-identical run after run. Like tools/golden, the script pins
torch to its AVX2 kernels and the fbgemm engine (what x86 runs on an AVX2
CPU) and one thread.
"""
import os
import sys

_ENV = {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
if any(os.environ.get(k) != v for k, v in _ENV.items()):
    env = dict(os.environ)
    env.update(_ENV)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import argparse
import copy
import functools
import json
import warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
import torch.nn as nn
import torch.ao.quantization as tq
import torch.ao.nn.quantized as nnq
from safetensors.numpy import save_file
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize as _LFQ

OUT = None


def t2n(t):
    if isinstance(t, np.ndarray):
        return t
    t = t.detach()
    if t.is_quantized:
        t = t.int_repr()
    a = t.cpu().numpy()
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    if a.dtype == np.int32:
        a = a.astype(np.int64)
    return np.ascontiguousarray(a)


def save(name, tensors, meta=None):
    arrs = {k: t2n(v) for k, v in tensors.items()}
    path = os.path.join(OUT, name + ".safetensors")
    save_file(arrs, path, metadata={"meta": json.dumps(meta or {}, sort_keys=True)})
    print("%-28s %3d tensors" % (name, len(arrs)))


def qp(t):
    """(scale, zero_point) of a per-tensor quantized tensor, JSON-friendly."""
    return [float(t.q_scale()), int(t.q_zero_point())]


def qweight(prefix, w, out):
    """A quantized weight's codes and qparams into `out`."""
    out[prefix + ".int"] = w.int_repr()
    if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        out[prefix + ".scale"] = np.array([w.q_scale()], np.float64)
        out[prefix + ".zp"] = np.array([w.q_zero_point()], np.int64)
    else:
        out[prefix + ".scale"] = w.q_per_channel_scales().double().numpy()
        out[prefix + ".zp"] = w.q_per_channel_zero_points().to(torch.int64).numpy()


# ---------------------------------------------------------------- PTQ of one module

class Wrap(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.quant = tq.QuantStub()
        self.m = m
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.m(self.quant(x)))


def ptq_case(name, module, x_calib, x_test, qconfig, meta, mapping=None, fuse=None, weight_attr="weight",
             safe=False):
    """Prepare / calibrate / convert `module` (wrapped in stubs) with `qconfig`;
    record the float weights, the calibration and test inputs, the quantized
    weight, the stub's and the module's output qparams, the quantized input
    codes and the converted module's output codes."""
    torch.manual_seed(0)
    model = Wrap(module).eval()
    out = {}
    for k, v in module.state_dict().items():
        if v.dtype.is_floating_point:
            out["float." + k] = v
    float_model = copy.deepcopy(model)
    if fuse:
        model = tq.fuse_modules(model, fuse)
    model.qconfig = qconfig
    mp = tq.get_default_static_quant_module_mappings()
    if mapping:
        mp.update(mapping)
    prepared = tq.prepare(copy.deepcopy(model), allow_list=set(mp.keys()) | {tq.QuantStub})
    prepared(x_calib)
    q = tq.convert(prepared, mapping=mp)
    if safe:
        qs = q.quant(x_test)
        ok = safe_codes(q.m, safe, qs.q_scale(), qs.q_zero_point())
        x_test = make_safe(x_test, qs.q_scale(), qs.q_zero_point(), ok)
    out["x_calib"] = x_calib
    out["x_test"] = x_test
    with torch.no_grad():
        out["y_float"] = float_model.m(x_test)
    qx = q.quant(x_test)
    out["qx"] = qx
    y = q.m(qx)
    out["qy"] = y
    meta = dict(meta)
    meta["quant_qparams"] = qp(qx)
    meta["out_qparams"] = qp(y) if y.is_quantized else None
    m = q.m[0] if isinstance(q.m, nn.Sequential) else q.m
    meta["module"] = m._get_name() if hasattr(m, "_get_name") else type(m).__name__
    w = None
    if hasattr(m, weight_attr):
        w = getattr(m, weight_attr)
        w = w() if callable(w) else w
    if w is not None and getattr(w, "is_quantized", False):
        qweight("qweight", w, out)
    if hasattr(m, "bias") and callable(m.bias) and m.bias() is not None:
        out["qbias"] = m.bias()
    save(name, out, meta)


def randn(*s, scale=1.0):
    return torch.randn(*s) * scale


def safe_codes(fn, fn_float, scale, zp):
    """Codes on which PyTorch's quantized `fn` gives what rquant's exact
    arithmetic gives: `fn_float` on the exact dequantized value, quantized.
    PyTorch's vectorised kernels dequantize with an FMA (docs/numerics.md
    §8, §11), which moves some codes across a rounding boundary; reference
    inputs avoid those codes, as tools/golden's do."""
    codes = torch.arange(256, dtype=torch.uint8)
    q = torch._make_per_tensor_quantized_tensor(codes, scale, zp)
    yq = fn(q)
    xf = torch.from_numpy((codes.numpy().astype(np.int64) - zp).astype(np.float32) * np.float32(scale))
    yf = fn_float(xf)
    yr = torch.quantize_per_tensor(yf, yq.q_scale(), yq.q_zero_point(), torch.quint8).int_repr()
    return (yq.int_repr() == yr).numpy()


def make_safe(x, scale, zp, ok):
    """`x` with every element whose code is not `ok` moved to the nearest ok code."""
    codes = torch.quantize_per_tensor(x, scale, zp, torch.quint8).int_repr().numpy().astype(np.int64)
    good = np.nonzero(ok)[0]
    x = x.clone()
    flat = x.view(-1)
    for i, c in enumerate(codes.reshape(-1)):
        if not ok[c]:
            g = good[np.argmin(np.abs(good - c))]
            flat[i] = float((g - zp) * np.float32(scale))
    return x


def conv_cases():
    x86 = tq.get_default_qconfig("x86")
    pt = tq.default_qconfig
    torch.manual_seed(1)
    c = nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2)
    ptq_case("conv1d", c, randn(3, 4, 11), randn(2, 4, 11), x86,
             {"kind": "Conv1d", "stride": [2], "padding": [1], "dilation": [1], "groups": 2})
    torch.manual_seed(2)
    c = nn.Sequential(nn.Conv1d(3, 5, 3, padding=2, dilation=2), nn.ReLU())
    ptq_case("conv_relu1d", c, randn(3, 3, 9), randn(2, 3, 9), x86,
             {"kind": "ConvReLU1d"}, fuse=[["m.0", "m.1"]])
    torch.manual_seed(3)
    c = nn.Conv3d(2, 4, (2, 3, 3), stride=(1, 2, 1), padding=(1, 1, 0))
    ptq_case("conv3d", c, randn(2, 2, 4, 6, 5), randn(1, 2, 4, 6, 5), x86,
             {"kind": "Conv3d", "stride": [1, 2, 1], "padding": [1, 1, 0], "dilation": [1, 1, 1], "groups": 1})
    torch.manual_seed(4)
    m = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.BatchNorm3d(3), nn.ReLU())
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.3, 0.3)
        m[1].running_var.uniform_(0.5, 2.0)
        m[1].weight.uniform_(0.5, 1.5)
        m[1].bias.uniform_(-0.2, 0.2)
    ptq_case("conv_bn_relu3d", m.eval(), randn(2, 2, 3, 5, 4), randn(1, 2, 3, 5, 4), x86,
             {"kind": "ConvBnReLU3d"}, fuse=[["m.0", "m.1", "m.2"]])
    torch.manual_seed(5)
    m = nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.3, 0.3)
        m[1].running_var.uniform_(0.5, 2.0)
    ptq_case("conv_bn1d", m.eval(), randn(3, 3, 10), randn(2, 3, 10), x86, {"kind": "ConvBn1d"},
             fuse=[["m.0", "m.1"]])
    torch.manual_seed(6)
    c = nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    ptq_case("conv_transpose1d", c, randn(3, 4, 7), randn(2, 4, 7), pt,
             {"kind": "ConvTranspose1d", "stride": [2], "padding": [1], "output_padding": [1],
              "dilation": [1], "groups": 2})
    torch.manual_seed(7)
    c = nn.ConvTranspose2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    ptq_case("conv_transpose2d", c, randn(2, 3, 5, 4), randn(1, 3, 5, 4), pt,
             {"kind": "ConvTranspose2d", "stride": [2, 1], "padding": [1, 0], "output_padding": [0, 0],
              "dilation": [1, 2], "groups": 1})
    torch.manual_seed(8)
    c = nn.ConvTranspose3d(2, 3, (2, 3, 2), stride=(2, 1, 2), padding=(0, 1, 1), output_padding=(1, 0, 0))
    ptq_case("conv_transpose3d", c, randn(2, 2, 3, 4, 3), randn(1, 2, 3, 4, 3), pt,
             {"kind": "ConvTranspose3d", "stride": [2, 1, 2], "padding": [0, 1, 1],
              "output_padding": [1, 0, 0], "dilation": [1, 1, 1], "groups": 1})
    torch.manual_seed(9)
    m = nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2), nn.BatchNorm2d(4))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.3, 0.3)
        m[1].running_var.uniform_(0.5, 2.0)
        m[1].weight.uniform_(0.5, 1.5)
    fused = tq.fuse_modules(copy.deepcopy(m).eval(), [["0", "1"]])
    out = {"float." + k: v for k, v in m.state_dict().items() if v.dtype.is_floating_point}
    out["fused.weight"] = fused[0].weight
    out["fused.bias"] = fused[0].bias
    x = randn(2, 3, 4, 4)
    out["x"] = x
    out["y"] = fused(x)
    save("fuse_convtranspose_bn", out, {})


def norm_cases():
    x86 = tq.get_default_qconfig("x86")
    torch.manual_seed(10)
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    ptq_case("batch_norm2d", bn.eval(), randn(3, 5, 4, 4), randn(2, 5, 4, 4), x86, {"kind": "BatchNorm2d"},
             weight_attr="__none__")
    torch.manual_seed(11)
    m = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU())
    with torch.no_grad():
        m[0].running_mean.uniform_(-0.5, 0.5)
        m[0].running_var.uniform_(0.5, 2.0)
    ptq_case("bn_relu2d", m.eval(), randn(3, 4, 3, 5), randn(2, 4, 3, 5), x86, {"kind": "BNReLU2d"},
             fuse=[["m.0", "m.1"]], weight_attr="__none__")
    torch.manual_seed(12)
    bn = nn.BatchNorm3d(3)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
    ptq_case("batch_norm3d", bn.eval(), randn(2, 3, 3, 4, 4), randn(2, 3, 3, 4, 4), x86, {"kind": "BatchNorm3d"},
             weight_attr="__none__")
    torch.manual_seed(13)
    ln = nn.LayerNorm([4, 6])
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.3, 0.3)
    ptq_case("layer_norm", ln, randn(3, 5, 4, 6), randn(2, 5, 4, 6), x86,
             {"kind": "LayerNorm", "normalized_shape": [4, 6], "eps": 1e-5}, weight_attr="__none__")
    torch.manual_seed(14)
    gn = nn.GroupNorm(2, 6)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.3, 0.3)
    ptq_case("group_norm", gn, randn(3, 6, 5, 3), randn(2, 6, 5, 3), x86,
             {"kind": "GroupNorm", "num_groups": 2, "eps": 1e-5}, weight_attr="__none__")
    torch.manual_seed(15)
    inn = nn.InstanceNorm1d(4, affine=True)
    with torch.no_grad():
        inn.weight.uniform_(0.5, 1.5)
        inn.bias.uniform_(-0.3, 0.3)
    ptq_case("instance_norm1d", inn, randn(3, 4, 9), randn(2, 4, 9), x86,
             {"kind": "InstanceNorm1d", "eps": 1e-5}, weight_attr="__none__")
    torch.manual_seed(16)
    inn = nn.InstanceNorm2d(3)
    ptq_case("instance_norm2d", inn, randn(3, 3, 5, 6), randn(2, 3, 5, 6), x86,
             {"kind": "InstanceNorm2d", "eps": 1e-5}, weight_attr="__none__")


def act_cases():
    x86 = tq.get_default_qconfig("x86")
    torch.manual_seed(20)
    ptq_case("elu", nn.ELU(0.7), randn(4, 30), randn(3, 30), x86, {"kind": "ELU", "alpha": 0.7},
             weight_attr="__none__", safe=lambda x: nn.functional.elu(x, 0.7))
    ptq_case("leaky_relu", nn.LeakyReLU(0.05), randn(4, 30), randn(3, 30), x86,
             {"kind": "LeakyReLU", "negative_slope": 0.05}, weight_attr="__none__",
             safe=lambda x: nn.functional.leaky_relu(x, 0.05))
    torch.manual_seed(21)
    p = nn.PReLU(1, init=0.2)
    ptq_case("prelu", p, randn(4, 3, 7), randn(2, 3, 7), tq.default_qconfig, {"kind": "PReLU"})
    torch.manual_seed(22)
    p = nn.PReLU(3, init=0.25)
    with torch.no_grad():
        p.weight.copy_(torch.tensor([0.1, 0.25, -0.3]))
    qc = tq.QConfig(activation=tq.default_observer,
                    weight=tq.MinMaxObserver.with_args(dtype=torch.quint8))
    ptq_case("prelu3", p, randn(4, 3, 7), randn(2, 3, 7), qc, {"kind": "PReLU"})
    torch.manual_seed(23)
    ptq_case("softmax", nn.Softmax(dim=1), randn(4, 6, 3), randn(2, 6, 3), x86, {"kind": "Softmax", "dim": 1},
             mapping={nn.Softmax: nnq.Softmax}, weight_attr="__none__")
    # Float modules that stay float in PyTorch's converted models and run on quint8.
    torch.manual_seed(24)
    x = randn(2, 3, 4, 5)
    out = {}
    for n, m in [("sigmoid", nn.Sigmoid()), ("tanh", nn.Tanh()), ("hardsigmoid", nn.Hardsigmoid()),
                 ("hardtanh", nn.Hardtanh(-0.8, 1.1)), ("gelu", nn.GELU()), ("gelu_tanh", nn.GELU("tanh")),
                 ("relu6", nn.ReLU6()), ("celu", None), ("threshold", nn.Threshold(0.13, -0.5)),
                 ("leaky_relu", nn.LeakyReLU(0.1))]:
        ff = (lambda x: nn.functional.celu(x, 0.8)) if m is None else m
        if n == "celu":
            # torch.celu has no quantized kernel; quantized::celu with the input's qparams.
            fn = lambda q: torch.ops.quantized.celu(q, q.q_scale(), q.q_zero_point(), 0.8)  # noqa: E731
        else:
            fn = m
        xs = make_safe(x, 0.037, 121, safe_codes(fn, ff, 0.037, 121))
        qx = torch.quantize_per_tensor(xs, 0.037, 121, torch.quint8)
        out["qx." + n] = qx
        y = fn(qx)
        out[n] = y
        out[n + ".qparams"] = np.array([y.q_scale(), y.q_zero_point()], np.float64)
    save("float_acts_on_quint8", out, {"qx": qp(qx)})


def pool_cases():
    torch.manual_seed(30)
    x = randn(2, 3, 4, 7, 6)
    qx = torch.quantize_per_tensor(x, 0.05, 117, torch.quint8)
    out = {"qx": qx}
    y = nn.MaxPool3d((2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0))(qx)
    out["max_pool3d"] = y
    y = nn.AvgPool3d((2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0))(qx)
    out["avg_pool3d"] = y
    y = nn.AvgPool3d((2, 2, 3), stride=2, count_include_pad=False)(qx)
    out["avg_pool3d_nopad"] = y
    y = nn.AdaptiveAvgPool3d((3, 4, 5))(qx)
    out["adaptive_avg_pool3d"] = y
    x1 = randn(2, 3, 11)
    qx1 = torch.quantize_per_tensor(x1, 0.05, 117, torch.quint8)
    out["qx1"] = qx1
    out["max_pool1d"] = nn.MaxPool1d(3, stride=2, padding=1)(qx1)
    x2 = randn(2, 3, 5, 4)
    qx2 = torch.quantize_per_tensor(x2, 0.05, 117, torch.quint8)
    out["qx2"] = qx2
    out["upsample_nearest"] = nn.Upsample(scale_factor=2, mode="nearest")(qx2)
    out["upsample_bilinear"] = nn.Upsample(size=(7, 9), mode="bilinear", align_corners=False)(qx2)
    out["upsample_bilinear_ac"] = nn.Upsample(size=(7, 9), mode="bilinear", align_corners=True)(qx2)
    # Float forward of the float modules (rquant's float path against torch's).
    out["x"] = x
    out["f_max_pool3d"] = nn.MaxPool3d((2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0))(x)
    out["f_avg_pool3d"] = nn.AvgPool3d((2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0))(x)
    out["f_adaptive_avg_pool3d"] = nn.AdaptiveAvgPool3d((3, 4, 5))(x)
    out["x2"] = x2
    out["f_upsample_bilinear"] = nn.Upsample(size=(7, 9), mode="bilinear", align_corners=False)(x2)
    save("pools", out, {"qx": [0.05, 117]})


def functional_cases():
    torch.manual_seed(40)
    x = randn(2, 3, 4)
    qx = torch.quantize_per_tensor(x, 0.03, 100, torch.quint8)
    out = {"qx": qx}
    qf = nnq.QFunctional()
    qf.scale, qf.zero_point = 0.05, 110
    for i, c in enumerate([0.7, -0.4, 3.5, -3.9, 0.0]):
        y = qf.add_scalar(qx, c)
        out["add_scalar.%d" % i] = y
        out["add_scalar.%d.qp" % i] = np.array([y.q_scale(), y.q_zero_point()], np.float64)
        y = torch.ops.quantized.add_scalar_relu(qx, c)
        out["add_scalar_relu.%d" % i] = y
        out["add_scalar_relu.%d.qp" % i] = np.array([y.q_scale(), y.q_zero_point()], np.float64)
        y = qf.mul_scalar(qx, c)
        out["mul_scalar.%d" % i] = y
        out["mul_scalar.%d.qp" % i] = np.array([y.q_scale(), y.q_zero_point()], np.float64)
    a = torch.quantize_per_tensor(randn(2, 3, 4), 0.03125, 128, torch.quint8)
    b = torch.quantize_per_tensor(randn(2, 4, 5), 0.0625, 120, torch.quint8)
    out["a"], out["b"] = a, b
    out["matmul"] = qf.matmul(a, b)
    c1 = torch.quantize_per_tensor(randn(2, 3, 4), 0.04, 130, torch.quint8)
    c2 = torch.quantize_per_tensor(randn(2, 2, 4), 0.02, 90, torch.quint8)
    out["c1"], out["c2"] = c1, c2
    out["cat"] = qf.cat([c1, c2], 1)
    out["cat_relu"] = torch.ops.quantized.cat_relu([c1, c2], 1, 0.05, 110)
    out["mul_relu"] = torch.ops.quantized.mul_relu(c1, c1, 0.05, 30)
    save("qfunctional", out, {"scalars": [0.7, -0.4, 3.5, -3.9, 0.0], "qf": [0.05, 110]})


def embedding_cases():
    torch.manual_seed(50)
    for bits, dt in [(8, torch.quint8), (4, torch.quint4x2)]:
        for mode in ["sum", "mean", "max"]:
            emb = nn.EmbeddingBag(12, 8, mode=mode)
            with torch.no_grad():
                emb.weight.copy_(randn(12, 8))
            emb.qconfig = tq.float_qparams_weight_only_qconfig if bits == 8 else \
                tq.float_qparams_weight_only_qconfig_4bit
            q = nnq.EmbeddingBag.from_float(emb)
            out = {"weight": emb.weight}
            w = q.weight()
            out["qweight.int"] = w.int_repr()
            out["qweight.scale"] = w.q_per_channel_scales().float()
            out["qweight.zp"] = w.q_per_channel_zero_points().float()
            packed = q._packed_params._packed_weight
            ind = torch.tensor([3, 1, 1, 7, 11, 0, 5, 2, 9, 9, 4])
            off = torch.tensor([0, 3, 3, 7])
            psw = randn(11)
            out["indices"], out["offsets"], out["psw"] = ind, off, psw
            fn = torch.ops.quantized.embedding_bag_byte if bits == 8 else torch.ops.quantized.embedding_bag_4bit
            out["bag_sum"] = fn(packed, ind, off, False, 0, False, None, None, False)
            out["bag_sum_psw"] = fn(packed, ind, off, False, 0, False, psw, None, False)
            off_last = torch.tensor([0, 3, 3, 7, 11])
            out["bag_sum_last"] = fn(packed, ind, off_last, False, 0, False, None, None, True)
            out["module_out"] = q(ind, off)
            # The float bag on the dequantized weight (the reference of mean and max).
            deq = w.dequantize()
            out["float_deq_out"] = nn.functional.embedding_bag(ind, deq, off, mode=mode)
            e2 = nnq.Embedding(12, 8, dtype=dt)
            e2.set_weight(w)
            ids = torch.tensor([[3, 0, 11], [5, 5, 2]])
            out["ids"] = ids
            out["emb_out"] = e2(ids)
            save("embedding_bag_%dbit_%s" % (bits, mode), out, {"bits": bits, "mode": mode})
    # Row-wise prepack ops straight from float weights.
    torch.manual_seed(51)
    w = randn(6, 8)
    w[2] = 0.5
    out = {"weight": w}
    out["byte"] = torch.ops.quantized.embedding_bag_byte_prepack(w)
    out["4bit"] = torch.ops.quantized.embedding_bag_4bit_prepack(w)
    out["2bit"] = torch.ops.quantized.embedding_bag_2bit_prepack(w)
    ind = torch.tensor([0, 5, 2, 2, 3, 1])
    off = torch.tensor([0, 2, 5])
    out["indices"], out["offsets"] = ind, off
    out["bag_byte"] = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(out["byte"], ind, off)
    out["bag_4bit"] = torch.ops.quantized.embedding_bag_4bit_rowwise_offsets(out["4bit"], ind, off)
    out["bag_2bit"] = torch.ops.quantized.embedding_bag_2bit_rowwise_offsets(out["2bit"], ind, off)
    save("embedding_prepack", out, {})


def extra_ptq_cases():
    """Fusions with no case of their own above: (Conv3d, BatchNorm3d),
    (Conv3d, ReLU), (BatchNorm3d, ReLU); and quantized::batch_norm1d(_relu)."""
    x86 = tq.get_default_qconfig("x86")
    torch.manual_seed(90)
    m = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.BatchNorm3d(3))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.3, 0.3)
        m[1].running_var.uniform_(0.5, 2.0)
        m[1].weight.uniform_(0.5, 1.5)
        m[1].bias.uniform_(-0.2, 0.2)
    ptq_case("conv_bn3d", m.eval(), randn(2, 2, 3, 5, 4), randn(1, 2, 3, 5, 4), x86,
             {"kind": "ConvBn3d"}, fuse=[["m.0", "m.1"]])
    torch.manual_seed(91)
    m = nn.Sequential(nn.Conv3d(2, 4, (2, 3, 2), stride=(1, 2, 1)), nn.ReLU())
    ptq_case("conv_relu3d", m.eval(), randn(2, 2, 4, 7, 5), randn(1, 2, 4, 7, 5), x86,
             {"kind": "ConvReLU3d"}, fuse=[["m.0", "m.1"]])
    torch.manual_seed(92)
    m = nn.Sequential(nn.BatchNorm3d(3), nn.ReLU())
    with torch.no_grad():
        m[0].running_mean.uniform_(-0.5, 0.5)
        m[0].running_var.uniform_(0.5, 2.0)
        m[0].weight.uniform_(0.5, 1.5)
    ptq_case("bn_relu3d", m.eval(), randn(2, 3, 3, 4, 4), randn(2, 3, 3, 4, 4), x86, {"kind": "BNReLU3d"},
             fuse=[["m.0", "m.1"]], weight_attr="__none__")
    torch.manual_seed(93)
    out = {}
    for shape in [(3, 5), (2, 5, 7)]:
        x = randn(*shape)
        qx = torch.quantize_per_tensor(x, 0.04, 120, torch.quint8)
        w, b = torch.rand(5) + 0.5, randn(5, scale=0.3)
        mean, var = randn(5, scale=0.4), torch.rand(5) + 0.5
        k = "x%dd" % len(shape)
        out[k + ".qx"], out[k + ".w"], out[k + ".b"], out[k + ".mean"], out[k + ".var"] = qx, w, b, mean, var
        out[k + ".y"] = torch.ops.quantized.batch_norm1d(qx, w, b, mean, var, 1e-5, 0.05, 110)
        out[k + ".y_relu"] = torch.ops.quantized.batch_norm1d_relu(qx, w, b, mean, var, 1e-5, 0.05, 110)
    save("batch_norm1d_op", out, {"qx": [0.04, 120], "out": [0.05, 110], "eps": 1e-5})


def fused_obs_fq_case():
    """torch.fused_moving_avg_obs_fake_quant called directly: per tensor
    (affine, symmetric qint8) and per row, two batches each (the first sets
    the running min/max, the second moves them), and a call with the
    observer off."""
    torch.manual_seed(95)
    out = {}
    meta = []
    for i, (per_row, sym, qmin, qmax) in enumerate([(False, False, 0, 255), (False, True, -128, 127),
                                                    (True, True, -128, 127), (True, False, 0, 127)]):
        c = 3
        rmin = torch.full((c,) if per_row else (1,), float("inf"))
        rmax = torch.full((c,) if per_row else (1,), float("-inf"))
        scale = torch.ones(c if per_row else 1)
        zp = torch.zeros(c if per_row else 1, dtype=torch.int32)
        for b in range(3):
            x = randn(c, 4, 5, scale=1.0 + b)
            on = torch.tensor([0 if b == 2 else 1], dtype=torch.long)
            y = torch.fused_moving_avg_obs_fake_quant(x, on, torch.tensor([1], dtype=torch.long), rmin, rmax,
                                                      scale, zp, 0.01, qmin, qmax, 0, per_row, sym)
            k = "c%d.b%d" % (i, b)
            out[k + ".x"], out[k + ".y"] = x, y
            out[k + ".min"], out[k + ".max"] = rmin.clone(), rmax.clone()
            out[k + ".scale"], out[k + ".zp"] = scale.clone(), zp.to(torch.int64).clone()
        meta.append({"per_row": per_row, "symmetric": sym, "quant_min": qmin, "quant_max": qmax})
    save("fused_obs_fq", out, {"calls": meta, "averaging_const": 0.01, "ch_axis": 0})


def qat_more_cases():
    """QAT forms with no case above: plain Conv1d / Conv3d, ConvReLU2d,
    ConvBn2d, ConvBn1d, ConvBn3d, ConvReLU3d (x86 QAT qconfig: one forward
    and backward, then convert), and nnqat.EmbeddingBag."""
    specs = [
        ("qat_conv1d", lambda: [nn.Conv1d(3, 4, 3, padding=1)], (4, 3, 9), None),
        ("qat_conv3d", lambda: [nn.Conv3d(2, 3, 3, padding=1)], (2, 2, 4, 5, 4), None),
        ("qat_conv_relu2d", lambda: [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()], (2, 3, 6, 5), ["m.0", "m.1"]),
        ("qat_conv_bn2d", lambda: [nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)], (2, 3, 6, 5), ["m.0", "m.1"]),
        ("qat_conv_bn1d", lambda: [nn.Conv1d(3, 4, 3, padding=1), nn.BatchNorm1d(4)], (4, 3, 9), ["m.0", "m.1"]),
        ("qat_conv_bn3d", lambda: [nn.Conv3d(2, 3, 3, padding=1), nn.BatchNorm3d(3)], (2, 2, 4, 5, 4), ["m.0", "m.1"]),
        ("qat_conv_relu3d", lambda: [nn.Conv3d(2, 3, 3, padding=1), nn.ReLU()], (2, 2, 4, 5, 4), ["m.0", "m.1"]),
    ]
    for i, (name, mods, shape, fuse) in enumerate(specs):
        torch.manual_seed(100 + i)
        m = Wrap(nn.Sequential(*mods())).train()
        out = {"float." + k: v for k, v in m.m.state_dict().items() if v.dtype.is_floating_point}
        if fuse:
            m = tq.fuse_modules_qat(m, [fuse])
        m.qconfig = tq.get_default_qat_qconfig("x86")
        tq.prepare_qat(m, inplace=True)
        x = randn(*shape)
        y = m(x)
        g = torch.randn(*y.shape)
        (y * g).sum().backward()
        out["x"], out["y"], out["g"] = x, y, g
        out["w_grad"] = m.m[0].weight.grad
        m.eval()
        q = tq.convert(copy.deepcopy(m))
        qx = q.quant(x)
        out["qx"], out["qy"] = qx, q.m(qx)
        save(name, out, {"out_qparams": qp(out["qy"]), "quant_qparams": qp(qx),
                         "module": q.m[0]._get_name(), "qat_module": m.m[0]._get_name()})
    torch.manual_seed(120)
    emb = nn.EmbeddingBag(10, 6, mode="sum")
    out = {"weight": emb.weight.detach().clone()}
    emb.qconfig = tq.default_embedding_qat_qconfig
    qe = torch.ao.nn.qat.EmbeddingBag.from_float(emb)
    ind = torch.tensor([1, 4, 4, 9, 0, 2, 7])
    off = torch.tensor([0, 3, 5])
    y = qe(ind, off)
    g = torch.randn(*y.shape)
    (y * g).sum().backward()
    out["indices"], out["offsets"], out["y"], out["g"], out["w_grad"] = ind, off, y, g, qe.weight.grad
    qm = nnq.EmbeddingBag.from_float(qe)
    w = qm.weight()
    out["qweight.int"] = w.int_repr()
    out["qweight.scale"] = w.q_per_channel_scales().float()
    out["qweight.zp"] = w.q_per_channel_zero_points().float()
    out["q_out"] = qm(ind, off)
    save("qat_embedding_bag", out, {})


def lsq_fixed_cases():
    # FixedQParams fake quant and observer, on a QAT Sigmoid / Tanh.
    torch.manual_seed(60)
    x = randn(4, 9, scale=3.0)
    out = {"xf": x}
    for n, fq in [("0to1", tq.default_fixed_qparams_range_0to1_fake_quant()),
                  ("neg1to1", tq.default_fixed_qparams_range_neg1to1_fake_quant())]:
        xr = x.clone().requires_grad_(True)
        y = fq(torch.sigmoid(xr) if n == "0to1" else torch.tanh(xr))
        y.sum().backward()
        out["fq." + n] = y
        out["fq_grad." + n] = xr.grad
    # LSQ on a weight (per channel) and an activation (per tensor).
    torch.manual_seed(61)
    w = randn(4, 6)
    x = randn(5, 6)
    wfq = _LFQ(
        observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, channel_len=4, use_grad_scaling=True)
    afq = _LFQ(
        observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255, reduce_range=False,
        use_grad_scaling=True)
    out["w"], out["x"] = w, x
    # Static estimate first (observer sets scale / zero point), then learning.
    wp = w.clone().requires_grad_(True)
    y = nn.functional.linear(x, wfq(wp))
    a = afq(y)
    out["step0.wfq_scale"] = wfq.scale.detach().clone()
    out["step0.afq_scale"] = afq.scale.detach().clone()
    out["step0.afq_zp"] = afq.zero_point.detach().clone()
    out["step0.out"] = a
    wfq.enable_param_learning()
    afq.enable_param_learning()
    wp = w.clone().requires_grad_(True)
    y = nn.functional.linear(x, wfq(wp))
    a = afq(y)
    g = randn(*a.shape)
    (a * g).sum().backward()
    out["g"] = g
    out["step1.out"] = a
    out["step1.w_grad"] = wp.grad
    out["step1.wfq_scale_grad"] = wfq.scale.grad
    out["step1.wfq_zp_grad"] = wfq.zero_point.grad
    out["step1.afq_scale_grad"] = afq.scale.grad
    out["step1.afq_zp_grad"] = afq.zero_point.grad
    save("lsq_fixed", out, {})


def cells_cases():
    torch.manual_seed(70)
    out = {}
    x = randn(3, 10)
    out["x"] = x
    for name, cls in [("lstm", nn.LSTMCell), ("gru", nn.GRUCell), ("rnn_tanh", nn.RNNCell)]:
        cell = cls(10, 12)
        h = randn(3, 12, scale=0.5)
        c = randn(3, 12, scale=0.5)
        for k, v in cell.state_dict().items():
            out[name + "." + k] = v
        out[name + ".h"], out[name + ".c"] = h, c
        q = tq.quantize_dynamic(nn.Sequential(cell), {cls}, dtype=torch.qint8)[0]
        if name == "lstm":
            hy, cy = q(x, (h, c))
            out[name + ".hy"], out[name + ".cy"] = hy, cy
            fh, fc = cell(x, (h, c))
            out[name + ".fhy"], out[name + ".fcy"] = fh, fc
        else:
            out[name + ".hy"] = q(x, h)
            out[name + ".fhy"] = cell(x, h)
        qf = tq.quantize_dynamic(nn.Sequential(copy.deepcopy(cell)), {cls}, dtype=torch.float16)[0]
        if name == "lstm":
            out[name + ".hy16"] = qf(x, (h, c))[0]
        else:
            out[name + ".hy16"] = qf(x, h)
    save("rnn_cells", out, {})


def qat_cases():
    # QAT ConvBnReLU1d and ConvBnReLU3d: one forward, backward, SGD step.
    for dims, name in [(1, "qat_conv_bn_relu1d"), (3, "qat_conv_bn_relu3d")]:
        torch.manual_seed(80 + dims)
        conv = nn.Conv1d(3, 4, 3, padding=1) if dims == 1 else nn.Conv3d(2, 3, 3, padding=1)
        bn = nn.BatchNorm1d(4) if dims == 1 else nn.BatchNorm3d(3)
        m = Wrap(nn.Sequential(conv, bn, nn.ReLU())).train()
        out = {"float." + k: v for k, v in m.m.state_dict().items() if v.dtype.is_floating_point}
        m = tq.fuse_modules_qat(m, [["m.0", "m.1", "m.2"]])
        m.qconfig = tq.get_default_qat_qconfig("x86")
        tq.prepare_qat(m, inplace=True)
        x = randn(4, 3, 9) if dims == 1 else randn(2, 2, 4, 5, 4)
        g = None
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for step in range(2):
            opt.zero_grad()
            y = m(x)
            g = torch.randn(*y.shape)
            (y * g).sum().backward()
            out["step%d.y" % step] = y
            out["step%d.g" % step] = g
            out["step%d.conv_grad" % step] = m.m[0].weight.grad
            out["step%d.gamma_grad" % step] = m.m[0].bn.weight.grad
            opt.step()
        out["x"] = x
        m.eval()
        q = tq.convert(copy.deepcopy(m))
        qweight("qweight", q.m[0].weight(), out)
        qx = q.quant(x)
        out["qx"] = qx
        out["qy"] = q.m(qx)
        save(name, out, {"out_qparams": qp(q.m(qx)), "quant_qparams": qp(qx)})
    # QAT LinearBn1d.
    torch.manual_seed(85)
    m = Wrap(nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5))).train()
    out = {"float." + k: v for k, v in m.m.state_dict().items() if v.dtype.is_floating_point}
    m = tq.fuse_modules_qat(m, [["m.0", "m.1"]])
    m.qconfig = tq.get_default_qat_qconfig("x86")
    tq.prepare_qat(m, inplace=True)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = randn(8, 6)
    for step in range(2):
        opt.zero_grad()
        y = m(x)
        g = torch.randn(*y.shape)
        (y * g).sum().backward()
        out["step%d.y" % step] = y
        out["step%d.g" % step] = g
        out["step%d.w_grad" % step] = m.m[0].weight.grad
        out["step%d.gamma_grad" % step] = m.m[0].bn.weight.grad
        opt.step()
    out["x"] = x
    m.eval()
    q = tq.convert(copy.deepcopy(m))
    qweight("qweight", q.m[0].weight(), out)
    qx = q.quant(x)
    out["qx"] = qx
    out["qy"] = q.m(qx)
    save("qat_linear_bn1d", out, {"out_qparams": qp(q.m(qx)), "quant_qparams": qp(qx)})
    # QAT Embedding with default_embedding_qat_qconfig.
    torch.manual_seed(86)
    emb = nn.Embedding(10, 6)
    out = {"weight": emb.weight.detach().clone()}
    emb.qconfig = tq.default_embedding_qat_qconfig
    qe = torch.ao.nn.qat.Embedding.from_float(emb)
    ids = torch.tensor([[1, 4, 4], [9, 0, 2]])
    y = qe(ids)
    g = torch.randn(*y.shape)
    (y * g).sum().backward()
    out["ids"], out["y"], out["g"], out["w_grad"] = ids, y, g, qe.weight.grad
    qm = nnq.Embedding.from_float(qe)
    w = qm.weight()
    out["qweight.int"] = w.int_repr()
    out["qweight.scale"] = w.q_per_channel_scales().float()
    out["qweight.zp"] = w.q_per_channel_zero_points().float()
    out["q_out"] = qm(ids)
    save("qat_embedding", out, {})


def _desc(v):
    """A `with_args` partial (or class) as {"class", "kwargs"}."""
    if v is None:
        return None
    p = getattr(v, "p", v)
    if isinstance(p, functools.partial):
        kw = {}
        for k, x in sorted(p.keywords.items()):
            if callable(x) and not isinstance(x, (torch.dtype,)):
                kw[k] = _desc(x)
            elif isinstance(x, (torch.dtype, torch.qscheme)):
                kw[k] = str(x).replace("torch.", "")
            else:
                kw[k] = x
        return {"class": getattr(p.func, "__name__", str(p.func)), "kwargs": kw}
    return {"class": getattr(v, "__name__", type(v).__name__), "kwargs": {}}


def default_mapping_case():
    """get_default_(qat_)qconfig_mapping("x86"): the global qconfig and the
    module-type entries (functional and method-name keys left out: eager
    mode has modules only)."""
    out = {}
    for name, fn in [("ptq", tq.get_default_qconfig_mapping), ("qat", tq.get_default_qat_qconfig_mapping)]:
        m = fn("x86")
        ent = {"": {"activation": _desc(m.global_qconfig.activation), "weight": _desc(m.global_qconfig.weight)}}
        for k, v in m.object_type_qconfigs.items():
            if isinstance(k, type):
                ent[k.__name__] = None if v is None else {"activation": _desc(v.activation), "weight": _desc(v.weight)}
        out[name] = ent
    save("default_qconfig_mapping", {"dummy": np.zeros(1, np.float32)}, out)


def presets_case():
    """Every named preset's class and arguments (the Rust test rebuilds them)."""
    import torch.ao.quantization.observer as o
    import torch.ao.quantization.fake_quantize as f
    import torch.ao.quantization.qconfig as qc

    def desc(v):
        if v is None:
            return None
        p = getattr(v, "p", v)
        if isinstance(p, functools.partial):
            kw = {}
            for k, x in sorted(p.keywords.items()):
                if callable(x) and not isinstance(x, (torch.dtype,)):
                    kw[k] = desc(x)
                elif isinstance(x, (torch.dtype, torch.qscheme)):
                    kw[k] = str(x).replace("torch.", "")
                else:
                    kw[k] = x
            return {"class": getattr(p.func, "__name__", str(p.func)), "kwargs": kw}
        return {"class": getattr(v, "__name__", type(v).__name__), "kwargs": {}}

    names = {}
    for mod in (o, f):
        for n in sorted(dir(mod)):
            if n.startswith("default") or "range_neg" in n or n.startswith("per_channel_weight") or n.startswith("fused_"):
                v = getattr(mod, n)
                if callable(v) and not isinstance(v, type):
                    names[n] = desc(v)
    for n in sorted(dir(qc)):
        v = getattr(qc, n)
        if isinstance(v, qc.QConfig) and not n.startswith("_") and "symmetric" not in n and "quint8_weight" not in n:
            names[n] = {"activation": desc(v.activation), "weight": desc(v.weight)}
    save("presets", {"dummy": np.zeros(1, np.float32)}, names)


def qconfig_mapping_case():
    """QConfigMapping precedence: which qconfig each module of a small model gets."""
    from torch.ao.quantization.fx.qconfig_mapping_utils import _maybe_adjust_qconfig_for_module_type_or_name

    class Sub(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.lin1 = nn.Linear(2, 2)
            self.lin2 = nn.Linear(2, 2)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = Sub()
            self.head = nn.Linear(2, 2)
            self.extra = nn.Conv2d(2, 2, 1)

    names = ["A", "B", "C", "D", "E"]
    qcs = [tq.QConfig(activation=tq.MinMaxObserver.with_args(quant_min=0, quant_max=i + 10),
                      weight=tq.default_weight_observer) for i in range(5)]
    mapping = (tq.QConfigMapping().set_global(qcs[0])
               .set_object_type(nn.Linear, qcs[1])
               .set_module_name_regex("features\\..*", qcs[2])
               .set_module_name_regex("head", qcs[3])
               .set_module_name("features.lin2", qcs[4])
               .set_module_name("extra", None))
    qdict = mapping.to_dict()
    m = M()
    res = {}
    for name, mod in m.named_modules():
        q = _maybe_adjust_qconfig_for_module_type_or_name(mapping, type(mod), name, qcs[0])
        res[name] = None if q is None else names[qcs.index(q)]
    save("qconfig_mapping", {"dummy": np.zeros(1, np.float32)}, {"resolved": res, "dict_keys": sorted(str(k) for k in qdict.keys())})


def main():
    global OUT
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "..", "crates", "nn", "tests", "data", "api")))
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    assert torch.__version__.split("+")[0] == "2.15.0", torch.__version__
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    torch.set_num_threads(1)
    # The x86 engine on a VNNI CPU sends symmetric-weight convolutions to
    # oneDNN (decided from cpuinfo; see tools/golden/README.md); fbgemm is what
    # x86 runs on the AVX2 reference machine.
    torch.backends.quantized.engine = "fbgemm"
    OUT = args.out
    os.makedirs(OUT, exist_ok=True)
    groups = [conv_cases, norm_cases, act_cases, pool_cases, functional_cases, embedding_cases,
              lsq_fixed_cases, cells_cases, qat_cases, presets_case, qconfig_mapping_case,
              default_mapping_case, extra_ptq_cases, fused_obs_fq_case,
              qat_more_cases]
    for g in groups:
        if args.only and g.__name__ != args.only:
            continue
        g()


if __name__ == "__main__":
    main()
