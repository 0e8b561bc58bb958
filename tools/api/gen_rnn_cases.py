#!/usr/bin/env python3
"""Reference data for crates/nn/tests/api_rnn_dynamic.rs, from torch 2.15.0:
the issue-14 target — a bidirectional two-layer LSTM and a bidirectional
two-layer GRU (hidden 256, 50 time steps, batch 2, input 64, non-zero
initial states) run by `quantize_dynamic` (qint8, default dynamic qconfig,
fbgemm) — plus every step's dynamic activation quantization, so that the
Rust test can trace a rounding flip to its step.

Usage:  python tools/api/gen_rnn_cases.py [--out crates/nn/tests/data/api]

Weights are not stored: they come from a counter-based generator (splitmix64
of the tensor's seed and the element index, 24 bits, times 2^-27: exact
f32s uniform in [-1/16, 1/16), PyTorch's init range for hidden 256) that the
Rust test reimplements; `meta` holds each tensor's seed and shape and the f64
sum of its values, which the test checks. Everything else — input, initial
states, outputs, final states, layer 0's output sequence, and per layer the
codes and qparams of each dynamic activation quantization — is stored.

The per-step data come from re-running PyTorch's recurrence
(aten/src/ATen/native/RNN.cpp: the input projection over the whole sequence
at once, the hidden projection per step, `quantized::linear_dynamic` with
reduce_range=True, gates in f32 with the same tensor ops) in Python; the
script asserts that this re-run reproduces the module's outputs and final
states bit for bit, so the recorded quantizations are the ones the module
made. The quantized codes are `torch.quantize_per_tensor` with the qparams of
`torch._choose_qparams_per_tensor(x, reduce_range=True)` (fbgemm's
FindMinMax + ChooseQuantizationParams and fbgemm::Quantize: what
qlinear_dynamic does); the script checks that dequantizing them and running
the int8 GEMM reproduces linear_dynamic exactly for every step.
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
import json
import warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
import torch.nn as nn
import torch.ao.quantization as tq
from safetensors.numpy import save_file

T, B, I, H = 50, 2, 64, 256
M64 = (1 << 64) - 1


def splitmix(seed, n):
    """n exact f32s in [-1/16, 1/16): splitmix64(seed·2^32 + i) >> 40, minus
    2^23, times 2^-27 (mirrored by the Rust test's `splitmix`)."""
    with np.errstate(over="ignore"):
        i = np.arange(n, dtype=np.uint64)
        z = np.uint64((seed << 32) & M64) + i
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.int64) - (1 << 23)
    return (u.astype(np.float32) * np.float32(2.0 ** -27)).astype(np.float32)


def set_weights(m, base):
    """Overwrite m's parameters (state_dict order) from the generator; the
    {name: [seed, shape, sum]} record for meta."""
    rec = {}
    sd = m.state_dict()
    for k, (name, v) in enumerate(sd.items()):
        seed = base + k
        w = torch.from_numpy(splitmix(seed, v.numel()).reshape(tuple(v.shape)))
        with torch.no_grad():
            v.copy_(w)
        rec[name] = [seed, list(v.shape), float(w.double().sum())]
    return rec


def t2n(t):
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t)
    t = t.detach()
    if t.is_quantized:
        t = t.int_repr()
    return np.ascontiguousarray(t.cpu().numpy())


def dyn_quant(x):
    """What qlinear_dynamic (fbgemm, reduce_range) does to its input."""
    s, zp = torch._choose_qparams_per_tensor(x, True)
    return torch.quantize_per_tensor(x, s, zp, torch.quint8), (s, zp)


class Recorder:
    """linear_dynamic that records each call's quantized input."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, packed, wq, bias):
        y = torch.ops.quantized.linear_dynamic(x, packed, True)
        q, qpar = dyn_quant(x)
        # The int8 GEMM on the recorded codes gives linear_dynamic exactly
        # (only when the dequantized product is exact in f32 would it not be
        # checkable; a mismatch here means the codes are not the module's).
        acc = (q.int_repr().double() - qpar[1]) @ (wq.int_repr().double() - wq.q_zero_point()).t()
        y2 = (acc.float() * np.float32(np.float32(qpar[0]) * np.float32(wq.q_scale())))
        if bias is not None:
            y2 = y2 + bias
        assert torch.equal(y, y2) or (y - y2).abs().max() < 1e-5, (y - y2).abs().max()
        self.calls.append((q, qpar))
        return y


def emulate(kind, sd, qpacks, x, h0, c0, dirs=2, layers=2):
    """PyTorch's CPU recurrence over dynamic linears: returns the output,
    h_n, c_n, each layer's output and the recorded quantizations
    {layer: {"x": (q, qp), "h": [[(q, qp)] per step] per dir}}."""
    rec = {}
    seq = x
    hn, cn, outs = [], [], []
    for l in range(layers):
        rec[l] = {"x": None, "h": []}
        dir_out = []
        for d in range(dirs):
            sfx = "l%d%s" % (l, "_reverse" if d else "")
            r = Recorder()
            pih, wih = qpacks["ih_" + sfx]
            phh, whh = qpacks["hh_" + sfx]
            inputs_w = r(seq, pih, wih, sd["bias_ih_" + sfx])
            steps = list(inputs_w.unbind(0))
            if d:
                steps = steps[::-1]
            ld = l * dirs + d
            h = h0[ld]
            c = c0[ld] if kind == "lstm" else None
            ys = []
            for gi in steps:
                gh = r(h, phh, whh, sd["bias_hh_" + sfx])
                if kind == "lstm":
                    gates = gh.add_(gi)
                    ig, fg, cg, og = gates.unsafe_chunk(4, 1)
                    ig = ig.sigmoid_()
                    fg = fg.sigmoid_()
                    cg = cg.tanh_()
                    og = og.sigmoid_()
                    c = (fg * c).add_(ig * cg)
                    h = og * c.tanh()
                else:
                    ci = gi.unsafe_chunk(3, 1)
                    ch = gh.unsafe_chunk(3, 1)
                    rg = ch[0].add_(ci[0]).sigmoid_()
                    zg = ch[1].add_(ci[1]).sigmoid_()
                    ng = ci[2].add(ch[2].mul_(rg)).tanh_()
                    h = (h - ng).mul_(zg).add_(ng)
                ys.append(h)
            if d:
                ys = ys[::-1]
            dir_out.append(torch.stack(ys))
            hn.append(h)
            if kind == "lstm":
                cn.append(c)
            if d == 0:
                rec[l]["x"] = r.calls[0]
            else:
                # Both directions quantize the same sequence the same way.
                assert torch.equal(r.calls[0][0].int_repr(), rec[l]["x"][0].int_repr())
                assert r.calls[0][1] == rec[l]["x"][1]
            rec[l]["h"].append(r.calls[1:])
        seq = torch.cat(dir_out, 2)
        outs.append(seq)
    return seq, torch.stack(hn), (torch.stack(cn) if kind == "lstm" else None), outs, rec


def quantize_weights(sd):
    """The default dynamic qconfig's weight quantization, prepacked."""
    out = {}
    for k, v in sd.items():
        if not k.startswith("weight_"):
            continue
        obs = tq.default_dynamic_qconfig.weight()
        obs(v)
        s, zp = obs.calculate_qparams()
        wq = torch.quantize_per_tensor(v.float(), float(s), int(zp), torch.qint8)
        bias = sd.get(k.replace("weight_", "bias_"))
        out[k[len("weight_"):]] = (torch.ops.quantized.linear_prepack(wq, bias), wq)
    return out


def big_case(kind, base, x, out, meta):
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    m = cls(I, H, num_layers=2, bidirectional=True).eval()
    meta[kind + ".weights"] = set_weights(m, base)
    g = torch.Generator().manual_seed(base)
    h0 = torch.randn(4, B, H, generator=g) * 0.5
    c0 = torch.randn(4, B, H, generator=g) * 0.5
    # quantize_dynamic converts children, never the root: wrap it.
    q = tq.quantize_dynamic(nn.Sequential(copy.deepcopy(m)), {cls}, dtype=torch.qint8)[0]
    assert type(q).__module__.endswith("quantized.dynamic.modules.rnn"), type(q)
    with torch.no_grad():
        if kind == "lstm":
            y, (hn, cn) = q(x, (h0, c0))
            fy, (fhn, fcn) = m(x, (h0, c0))
        else:
            y, hn = q(x, h0)
            fy, fhn = m(x, h0)
        sd = {k: v for k, v in m.state_dict().items()}
        ey, ehn, ecn, outs, rec = emulate(kind, sd, quantize_weights(sd), x, h0, c0)
    assert torch.equal(ey, y), (kind, (ey - y).abs().max())
    assert torch.equal(ehn, hn), kind
    if kind == "lstm":
        assert torch.equal(ecn, cn), kind
    p = kind + "."
    out[p + "h0"] = h0
    out[p + "out"] = y
    out[p + "hn"] = hn
    out[p + "fout"] = fy
    out[p + "fhn"] = fhn
    if kind == "lstm":
        out[p + "c0"] = c0
        out[p + "cn"] = cn
        out[p + "fcn"] = fcn
    out[p + "l0.out"] = outs[0]
    for l in range(2):
        xq, xqp = rec[l]["x"]
        out[p + "l%d.xq" % l] = xq.int_repr()
        out[p + "l%d.xq_qp" % l] = np.array([xqp[0], xqp[1]], np.float64)
        out[p + "l%d.hq" % l] = torch.stack([torch.stack([c[0].int_repr() for c in rec[l]["h"][d]])
                                            for d in range(2)])
        out[p + "l%d.hq_qp" % l] = np.array([[[c[1][0], c[1][1]] for c in rec[l]["h"][d]]
                                             for d in range(2)], np.float64)


def proj_case(x, out, meta):
    """LSTM proj_size: PyTorch's float module (rquant's dynamic one is tested
    against rquant's float one); PyTorch's own quantize_dynamic of it fails."""
    m = nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=64).eval()
    meta["proj.weights"] = set_weights(m, 3000)
    g = torch.Generator().manual_seed(3000)
    h0 = torch.randn(4, B, 64, generator=g) * 0.5
    c0 = torch.randn(4, B, H, generator=g) * 0.5
    with torch.no_grad():
        y, (hn, cn) = m(x, (h0, c0))
    out["proj.h0"], out["proj.c0"] = h0, c0
    out["proj.fout"], out["proj.fhn"], out["proj.fcn"] = y, hn, cn
    try:
        q = tq.quantize_dynamic(nn.Sequential(copy.deepcopy(m)), {nn.LSTM}, dtype=torch.qint8)[0]
        q(x, (h0, c0))
        meta["proj.torch_dynamic"] = "ran"
    except Exception as e:  # noqa: BLE001 — the failure is the fact recorded
        meta["proj.torch_dynamic"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:200])


def vecmath_case(out):
    """ATen's vectorised f32 sigmoid and tanh (Sleef expf8_u10 / tanhf8_u10,
    AVX2 with FMA) on inputs where they differ from the correctly rounded
    functions — the gate arithmetic rquant must match bit for bit."""
    g = torch.Generator().manual_seed(15)
    x = torch.randn(1 << 20, generator=g) * 4
    sig_cr = 1 / (1 + torch.exp(-x.double()).float())
    tanh_cr = torch.tanh(x.double()).float()
    pick = ((torch.sigmoid(x) != sig_cr) | (torch.tanh(x) != tanh_cr)).nonzero().flatten()[:4096]
    v = torch.cat([x[pick], torch.tensor([0.0, -0.0, 1e-30, -1e-30, 8.5, 8.7, -8.7, 20.0, -20.0,
                                          88.0, -88.0, 100.5, -104.5, -110.0, 1e-6, -3e-4])])
    out["vec.x"] = v
    out["vec.sigmoid"] = torch.sigmoid(v)
    out["vec.tanh"] = torch.tanh(v)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "..", "crates", "nn", "tests", "data", "api")))
    args = ap.parse_args()
    assert torch.__version__.split("+")[0] == "2.15.0", torch.__version__
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "fbgemm"
    g = torch.Generator().manual_seed(14)
    x = torch.randn(T, B, I, generator=g)
    out = {"x": x}
    meta = {"T": T, "B": B, "I": I, "H": H}
    big_case("lstm", 1000, x, out, meta)
    big_case("gru", 2000, x, out, meta)
    proj_case(x, out, meta)
    vecmath_case(out)
    arrs = {k: t2n(v) for k, v in out.items()}
    path = os.path.join(args.out, "rnn_dynamic.safetensors")
    save_file(arrs, path, metadata={"meta": json.dumps(meta, sort_keys=True)})
    print("rnn_dynamic: %d tensors, %d bytes" % (len(arrs), os.path.getsize(path)))


if __name__ == "__main__":
    main()
