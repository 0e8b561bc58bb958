"""batch_norm2d / batch_norm2d_relu / layer_norm / group_norm / instance_norm cases
(outputs from torch under its AVX2 kernels, each asserted equal to a NumPy model of
rquant's formula; see README.md).

ATen's AVX2 and AVX-512 builds compile these kernels with fused multiply-adds
(the compiler contracts `a*b + c`); its scalar build does not, and then differs by
one step in a few outputs. The models below follow the vector builds: the sums are
exact integers, `var = fma(-m, m, Q/n)`, and the per-element affine step is one
fma (`fma_f32`, exactly rounded)."""
import numpy as np
import torch

import common
from common import f32, save_case, fma_f32
from ops_elementwise import tq

SRC = "; equal to the model with exact integer sums and fused multiply-adds (ATen's AVX2/AVX-512 builds)"


def shape_name(shape):
    return "x".join(map(str, shape))


def quant(v, so, zo):
    inv = f32(1.0) / f32(so)
    return np.clip(np.rint((np.asarray(v, f32) * inv).astype(f32)) + zo, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ batch norm
def bn_coefficients(w, b, m, v, eps, xs, os_):
    inv_sigma = (1.0 / np.sqrt((v + f32(eps)).astype(f32)).astype(np.float64)).astype(f32)
    alpha = ((inv_sigma * w).astype(f32).astype(np.float64) * (xs / os_)).astype(f32)
    beta = ((b - ((m * inv_sigma).astype(f32) * w).astype(f32)).astype(f32).astype(np.float64) / os_).astype(f32)
    return alpha, beta


def fma_or_not(a, b, c, fused):
    """a*b + c with one rounding (fused) or two (ATen's scalar build)."""
    if fused:
        return fma_f32(a, b, c)
    return ((np.asarray(a, f32) * np.asarray(b, f32)).astype(f32) + np.asarray(c, f32)).astype(f32)


def bn_model(x, xz, alpha, beta, oz, relu, fused=True):
    C = x.shape[1]
    d = (x.astype(np.int64) - xz).astype(f32)
    A = np.broadcast_to(alpha.reshape(1, C, 1, 1), x.shape)
    B = np.broadcast_to(beta.reshape(1, C, 1, 1), x.shape)
    y = np.rint(fma_or_not(A, d, B, fused)).astype(np.float64) + oz
    return np.clip(y, oz if relu else 0, 255).astype(np.uint8)


def gen_batch_norm():
    rng = np.random.default_rng(601)
    shapes = [(1, 12, 2, 9), (2, 3, 4, 4), (1, 32, 3, 3), (1, 40, 2, 2), (2, 8, 5, 1), (1, 64, 2, 3), (1, 1, 3, 5), (3, 17, 2, 2)]
    for op in ("batch_norm2d", "batch_norm2d_relu"):
        relu = op.endswith("relu")
        for i, shape in enumerate(shapes):
            C = shape[1]
            xs = [0.25, float(f32(rng.uniform(0.01, 0.2))), 0.05][i % 3]
            xz = [128, 0, 255, int(rng.integers(0, 256))][i % 4]
            os_ = [float(f32(0.004)), float(f32(rng.uniform(0.01, 0.2))), 0.1][i % 3]
            oz = [10, 0, 255, int(rng.integers(0, 256))][(i + 1) % 4]
            w = rng.normal(size=C).astype(f32)
            b = rng.normal(size=C).astype(f32)
            m = rng.normal(size=C).astype(f32)
            v = rng.uniform(0.2, 3, size=C).astype(f32)
            if i % 4 == 3:
                v[0] = 0.0
            eps = [1e-5, 0.1, 1e-3][i % 3]
            x = rng.integers(0, 256, shape).astype(np.uint8)
            alpha, beta = bn_coefficients(w, b, m, v, eps, xs, os_)
            f = torch.ops.quantized.batch_norm2d_relu if relu else torch.ops.quantized.batch_norm2d
            y = f(tq(x, xs, xz), torch.from_numpy(w), torch.from_numpy(b), torch.from_numpy(m), torch.from_numpy(v), eps, os_,
                  oz).int_repr().numpy()
            assert (y == bn_model(x, xz, alpha, beta, oz, relu)).all(), (op, shape)
            attrs = {"scale": xs, "zero_point": xz, "out_scale": os_, "out_zero_point": oz}
            if eps != 1e-5 or i % 2:
                attrs["eps"] = eps
            save_case(op, "case%d_%s" % (i, shape_name(shape)), {"x": x, "weight": w, "bias": b, "mean": m, "var": v}, {"y": y}, attrs,
                      common.TORCH_SRC + SRC)


# ------------------------------------------------------------------ layer / group / instance norm
def stats(xg, xs, xz, eps, fused=True):
    """Per row of xg (groups x elements): (mean - zp, scale/std) as rquant's norm_stats."""
    n = xg.shape[-1]
    s = xg.astype(np.int64).sum(-1)
    s2 = (xg.astype(np.int64) ** 2).sum(-1)
    m = (s.astype(f32) / f32(n)).astype(f32)
    a = (s2.astype(f32) / f32(n)).astype(f32)
    var = np.maximum(fma_or_not(-m, m, a, fused), f32(0))
    t = ((var * f32(xs)).astype(f32) * f32(xs)).astype(f32).astype(np.float64) + eps
    rstd = (np.float64(f32(xs)) / np.sqrt(t)).astype(f32)
    return (m - f32(xz)).astype(f32), rstd


def layer_norm_model(x, ns, xs, xz, w, b, eps, so, zo, fused=(True, True)):
    n = int(np.prod(ns))
    xg = x.reshape(-1, n)
    mean, rstd = stats(xg, xs, xz, eps, fused[0])
    d = (xg.astype(np.int64) - xz).astype(f32)
    t = ((d - mean[:, None]).astype(f32) * rstd[:, None]).astype(f32)
    W = np.broadcast_to(np.ones(n, f32) if w is None else w.reshape(-1), t.shape)
    B = np.broadcast_to(np.zeros(n, f32) if b is None else b.reshape(-1), t.shape)
    return quant(fma_or_not(t, W, B, fused[1]), so, zo).reshape(x.shape)


def group_norm_model(x, G, xs, xz, w, b, eps, so, zo, fused=(True, True)):
    N, C = x.shape[:2]
    cpg = C // G
    mean, rstd = stats(x.reshape(N * G, -1), xs, xz, eps, fused[0])
    d = (x.reshape(N, G, cpg, -1).astype(np.int64) - xz).astype(f32)
    w = np.ones(C, f32) if w is None else w
    b = np.zeros(C, f32) if b is None else b
    gp = (rstd.reshape(N, G, 1, 1) * w.reshape(1, G, cpg, 1)).astype(f32)
    t = (d - mean.reshape(N, G, 1, 1)).astype(f32)
    y = fma_or_not(t, np.broadcast_to(gp, t.shape), np.broadcast_to(b.reshape(1, G, cpg, 1), t.shape), fused[1])
    return quant(y, so, zo).reshape(x.shape)


def norm_inputs(rng, i, nw):
    xs = [0.25, float(f32(rng.uniform(0.01, 0.3))), 0.05, float(f32(0.0371))][i % 4]
    xz = [128, 0, 255, int(rng.integers(0, 256))][i % 4]
    so = [float(f32(0.004)), float(f32(rng.uniform(0.005, 0.05))), 0.05][i % 3]
    zo = [10, 255, 0, int(rng.integers(0, 256))][(i + 1) % 4]
    eps = [1e-5, 0.1, 1e-3][i % 3]
    has_w, has_b = [(True, True), (False, False), (True, False), (False, True)][i % 4]
    w = rng.normal(size=nw).astype(f32) if has_w else None
    b = rng.normal(size=nw).astype(f32) if has_b else None
    return xs, xz, so, zo, eps, w, b


def norm_attrs(xs, xz, so, zo, eps, i):
    attrs = {"scale": xs, "zero_point": xz, "out_scale": so, "out_zero_point": zo}
    if eps != 1e-5 or i % 2:
        attrs["eps"] = eps
    return attrs


def affine_ins(x, w, b):
    ins = {"x": x}
    if w is not None:
        ins["weight"] = w
    if b is not None:
        ins["bias"] = b
    return ins


def opt(t):
    return None if t is None else torch.from_numpy(t)


def gen_layer_norm():
    rng = np.random.default_rng(602)
    cases = [((5, 3), [3]), ((4, 37), [37]), ((2, 64), [64]), ((3, 5, 8), [8]), ((2, 3, 4, 5), [4, 5]), ((2, 100), [100]),
             ((2, 3, 33), [3, 33]), ((1, 7), [7]), ((6, 1), [1]), ((2, 2, 130), [130])]
    for i, (shape, ns) in enumerate(cases):
        xs, xz, so, zo, eps, w, b = norm_inputs(rng, i, int(np.prod(ns)))
        if w is not None:
            w = w.reshape(ns)
        if b is not None:
            b = b.reshape(ns)
        x = rng.integers(0, 256, shape).astype(np.uint8)
        if i % 5 == 4:
            x = rng.integers(120, 136, shape).astype(np.uint8)
        y = torch.ops.quantized.layer_norm(tq(x, xs, xz), ns, opt(w), opt(b), eps, so, zo).int_repr().numpy()
        assert (y == layer_norm_model(x, ns, xs, xz, w, b, eps, so, zo)).all(), ("layer_norm", shape, ns)
        attrs = norm_attrs(xs, xz, so, zo, eps, i)
        attrs["normalized_shape"] = ns
        save_case("layer_norm", "case%d_%s_ns%s%s%s" % (i, shape_name(shape), shape_name(ns), "_w" if w is not None else "",
                                                      "_b" if b is not None else ""), affine_ins(x, w, b), {"y": y}, attrs,
                  common.TORCH_SRC + SRC)


def gen_group_norm():
    rng = np.random.default_rng(603)
    # no group with a single element in samples n >= 1 (torch 2.15 returns garbage there)
    cases = [((1, 12, 2, 9), 6), ((2, 6, 3, 5), 3), ((1, 4, 7, 7), 2), ((3, 8, 2, 9), 8), ((2, 3, 37), 1), ((2, 16, 4, 4), 4),
             ((1, 6, 1, 1), 3), ((2, 10, 3, 3), 5), ((1, 32, 5, 5), 8), ((2, 4, 9), 2)]
    for i, (shape, G) in enumerate(cases):
        C = shape[1]
        xs, xz, so, zo, eps, w, b = norm_inputs(rng, i, C)
        x = rng.integers(0, 256, shape).astype(np.uint8)
        y = torch.ops.quantized.group_norm(tq(x, xs, xz), G, opt(w), opt(b), eps, so, zo).int_repr().numpy()
        assert (y == group_norm_model(x, G, xs, xz, w, b, eps, so, zo)).all(), ("group_norm", shape, G)
        attrs = norm_attrs(xs, xz, so, zo, eps, i)
        attrs["num_groups"] = G
        save_case("group_norm", "case%d_%s_g%d%s%s" % (i, shape_name(shape), G, "_w" if w is not None else "", "_b" if b is not None else ""),
                  affine_ins(x, w, b), {"y": y}, attrs, common.TORCH_SRC + SRC)


def gen_instance_norm():
    rng = np.random.default_rng(604)
    cases = [(3, 2, 5, 5), (1, 4, 3, 3), (2, 3, 7, 2), (2, 5, 33), (1, 8, 4, 4), (2, 2, 1, 9), (1, 16, 6, 6), (3, 3, 2, 2)]
    for i, shape in enumerate(cases):
        C = shape[1]
        xs, xz, so, zo, eps, w, b = norm_inputs(rng, i, C)
        x = rng.integers(0, 256, shape).astype(np.uint8)
        y = torch.ops.quantized.instance_norm(tq(x, xs, xz), opt(w), opt(b), eps, so, zo).int_repr().numpy()
        assert (y == group_norm_model(x, C, xs, xz, w, b, eps, so, zo)).all(), ("instance_norm", shape)
        save_case("instance_norm", "case%d_%s%s%s" % (i, shape_name(shape), "_w" if w is not None else "", "_b" if b is not None else ""),
                  affine_ins(x, w, b), {"y": y}, norm_attrs(xs, xz, so, zo, eps, i), common.TORCH_SRC + SRC)


def generate():
    gen_batch_norm()
    gen_layer_norm()
    gen_group_norm()
    gen_instance_norm()
    gen_pinning()


# ------------------------------------------------------------------ cases that pin the fused arithmetic
PIN_SRC = ("; input found by search where ATen's scalar build (no fused multiply-add) gives another output: "
           "pins the fused arithmetic of the AVX2/AVX-512 builds")


def differs(model, variants):
    """Whether some unfused variant of a model gives another output."""
    base = model((True, True))
    return any((model(v) != base).any() for v in variants)


def gen_pinning():
    rng = np.random.default_rng(610)
    found = {}
    # layer norm: the variance (fused -m*m + Q/n) and the affine step
    for trial in range(6000):
        if found.get("layer_norm_var") and found.get("layer_norm_el"):
            break
        shape, ns = [((4, 37), [37]), ((2, 64), [64]), ((3, 5, 8), [8])][trial % 3]
        xs, xz, so, zo, eps, w, b = norm_inputs(rng, 0, ns[0])
        so = float(f32(rng.uniform(0.001, 0.01)))
        x = rng.integers(0, 256, shape).astype(np.uint8)
        mk = lambda fz: layer_norm_model(x, ns, xs, xz, w, b, eps, so, zo, fz)  # noqa: E731
        base = mk((True, True))
        for key, var in (("layer_norm_var", (False, True)), ("layer_norm_el", (True, False))):
            if not found.get(key) and (mk(var) != base).any():
                found[key] = True
                y = torch.ops.quantized.layer_norm(tq(x, xs, xz), ns, opt(w), opt(b), eps, so, zo).int_repr().numpy()
                assert (y == base).all(), key
                attrs = norm_attrs(xs, xz, so, zo, eps, 1)
                attrs["normalized_shape"] = ns
                save_case("layer_norm", "pin_%s_%s" % (key.split("_")[-1], shape_name(shape)), affine_ins(x, w, b), {"y": y}, attrs,
                          common.TORCH_SRC + PIN_SRC)
    # group / instance norm
    for op in ("group_norm", "instance_norm"):
        for trial in range(6000):
            if found.get(op):
                break
            shape, G = [((2, 6, 3, 5), 3), ((1, 4, 7, 7), 2), ((3, 8, 2, 9), 8)][trial % 3]
            if op == "instance_norm":
                G = shape[1]
            xs, xz, so, zo, eps, w, b = norm_inputs(rng, 0, shape[1])
            so = float(f32(rng.uniform(0.001, 0.01)))
            x = rng.integers(0, 256, shape).astype(np.uint8)
            mk = lambda fz: group_norm_model(x, G, xs, xz, w, b, eps, so, zo, fz)  # noqa: E731
            if differs(mk, [(False, False), (False, True), (True, False)]):
                found[op] = True
                if op == "group_norm":
                    y = torch.ops.quantized.group_norm(tq(x, xs, xz), G, opt(w), opt(b), eps, so, zo)
                else:
                    y = torch.ops.quantized.instance_norm(tq(x, xs, xz), opt(w), opt(b), eps, so, zo)
                y = y.int_repr().numpy()
                assert (y == mk((True, True))).all(), op
                attrs = norm_attrs(xs, xz, so, zo, eps, 1)
                if op == "group_norm":
                    attrs["num_groups"] = G
                save_case(op, "pin_%s" % shape_name(shape), affine_ins(x, w, b), {"y": y}, attrs, common.TORCH_SRC + PIN_SRC)
    # batch norm: one fma per element
    for op in ("batch_norm2d", "batch_norm2d_relu"):
        relu = op.endswith("relu")
        for trial in range(20000):
            if found.get(op):
                break
            shape = (1, 40, 2, 3)
            C = shape[1]
            xs = float(f32(rng.uniform(0.01, 0.2)))
            xz = int(rng.integers(0, 256))
            os_ = float(f32(rng.uniform(0.01, 0.2)))
            oz = int(rng.integers(0, 256))
            w, b, m = (rng.normal(size=C).astype(f32) for _ in range(3))
            v = rng.uniform(0.5, 2, size=C).astype(f32)
            alpha, beta = bn_coefficients(w, b, m, v, 1e-5, xs, os_)
            x = rng.integers(0, 256, shape).astype(np.uint8)
            base = bn_model(x, xz, alpha, beta, oz, relu)
            if (bn_model(x, xz, alpha, beta, oz, relu, fused=False) != base).any():
                found[op] = True
                f = torch.ops.quantized.batch_norm2d_relu if relu else torch.ops.quantized.batch_norm2d
                y = f(tq(x, xs, xz), torch.from_numpy(w), torch.from_numpy(b), torch.from_numpy(m), torch.from_numpy(v), 1e-5, os_,
                      oz).int_repr().numpy()
                assert (y == base).all(), op
                save_case(op, "pin_%s" % shape_name(shape), {"x": x, "weight": w, "bias": b, "mean": m, "var": v}, {"y": y},
                          {"scale": xs, "zero_point": xz, "out_scale": os_, "out_zero_point": oz}, common.TORCH_SRC + PIN_SRC)
    for key in ("layer_norm_var", "layer_norm_el", "group_norm", "instance_norm", "batch_norm2d", "batch_norm2d_relu"):
        assert found.get(key), "no pinning input found for " + key
