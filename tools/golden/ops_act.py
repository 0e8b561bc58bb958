"""relu6 / hardtanh / hardsigmoid / leaky_relu / elu / tanh / gelu / softmax / mul_relu cases
(outputs from torch, each asserted equal to a NumPy model of rquant's formula; see README.md).

ATen's activation kernels dequantize the first elements of a tensor with an FMA
(`fma(s, q, -s*zp)`) and the rest exactly (`(q - zp) * s`), so inputs are drawn
from the codes where both give the same float; the smooth functions (exp, tanh,
erf) differ between implementations in the last bit, so their inputs also sit
at least 0.002 of an output step away from a rounding boundary (as sigmoid's)."""
import math

import numpy as np
import torch
import torch.nn.functional as F

import common
from common import f32, save_case
from ops_elementwise import deq_exact, deq_fma, fscale, tq

MARGIN = 0.002
SRC_PATHS = "; inputs chosen so the FMA-vector and scalar dequantize paths agree"
SRC_SMOOTH = SRC_PATHS + "; and >= 0.002 LSB away from rounding boundaries (exp/tanh/erf implementation independent)"


def quant(v, so, zo):
    """quantize_val: clamp(zo + rne(f32(v * f32(1/f32(so))))), quint8."""
    inv = f32(1.0) / f32(so)
    return np.clip(np.rint((np.asarray(v, f32) * inv).astype(f32)) + zo, 0, 255).astype(np.int64)


def agreeing_codes(s, z):
    """Codes whose exact and FMA dequantized values are the same float."""
    allq = np.arange(256)
    return allq[common.bits_equal_elementwise(deq_exact(allq, s, z), deq_fma(allq, s, z))]


def far_codes(codes, ref64, so):
    """Codes whose float64 reference is >= MARGIN of an output step from a .5 boundary."""
    t = ref64[codes] * float(f32(1.0) / f32(so))
    dist = np.abs(t - (np.floor(t) + 0.5))
    return codes[dist >= MARGIN]


def shape_name(shape):
    return "x".join(map(str, shape))


SIZES = [(7,), (33,), (64,), (65,), (130,), (2, 3, 33), (1, 4, 5, 5), (256,)]


def draw(rng, codes, shape):
    return rng.choice(codes, int(np.prod(shape))).astype(np.uint8).reshape(shape)


# ------------------------------------------------------------------ relu6 / hardtanh
def gen_clamps():
    rng = np.random.default_rng(401)
    for i, zp in enumerate((0, 255, 128, 3, 200, 64)):
        shape = SIZES[i % len(SIZES)]
        s = [0.05, 0.1, 2.0, 0.0473, float(f32(0.0237)), 1.0][i]
        x = rng.integers(0, 256, shape).astype(np.uint8)
        y = torch.ops.quantized.relu6(tq(x, s, zp)).int_repr().numpy()
        lo, hi = quant(0.0, s, zp), quant(6.0, s, zp)
        assert (y == np.minimum(np.maximum(x, lo), hi)).all(), "relu6"
        save_case("relu6", "case%d_zp%d_%s" % (i, zp, shape_name(shape)), {"x": x}, {"y": y}, {"scale": s, "zero_point": zp},
                  common.TORCH_SRC)
    from torch.ao.nn.quantized.functional import hardtanh
    bounds = [(-1.0, 1.0), (0.0, 6.0), (-0.5, 0.25), (1.0, 1.0), (2.0, -2.0), (-1e30, 0.3), (-3.0, 1e30),
              (-0.125, 0.375), (0.05, 0.05), (-100.0, 100.0)]
    for i, (lo_v, hi_v) in enumerate(bounds):
        shape = SIZES[i % len(SIZES)]
        s = [0.25, 0.05, 0.0473, 0.1, float(f32(0.0171)), 0.5, 0.03][i % 7]
        zp = [128, 0, 255, 77, 10, 250, 128][i % 7]
        x = rng.integers(0, 256, shape).astype(np.uint8)
        y = hardtanh(tq(x, s, zp), lo_v, hi_v).int_repr().numpy()
        lo, hi = quant(lo_v, s, zp), quant(hi_v, s, zp)
        assert (y == np.minimum(np.maximum(x, lo), hi)).all(), "hardtanh"
        attrs = {"scale": s, "zero_point": zp}
        if (lo_v, hi_v) != (-1.0, 1.0) or i % 2:
            attrs["min_val"] = lo_v
            attrs["max_val"] = hi_v
        name = "case%02d_%s_%s_zp%d_%s" % (i, ("%g" % lo_v).replace("-", "m"), ("%g" % hi_v).replace("-", "m"), zp, shape_name(shape))
        save_case("hardtanh", name, {"x": x}, {"y": y}, attrs, common.TORCH_SRC + "; bounds quantize(min_val), quantize(max_val) (ties included)")


# ------------------------------------------------------------------ table activations
def table_case(op, rng, i, s, z, shape, model, torch_fn, attrs, margin_ref=None, so=None):
    codes = agreeing_codes(s, z)
    src = common.TORCH_SRC + SRC_PATHS
    if margin_ref is not None:
        codes = far_codes(codes, margin_ref, so)
        src = common.TORCH_SRC + SRC_SMOOTH
    assert len(codes) > 8, (op, s, z)
    x = draw(rng, codes, shape)
    y = torch_fn(tq(x, s, z)).int_repr().numpy()
    assert (y == model[x.astype(np.int64)]).all(), op
    save_case(op, "case%02d_zp%d_%s" % (i, z, shape_name(shape)), {"x": x}, {"y": y}, attrs, src)


def gen_hardsigmoid():
    rng = np.random.default_rng(402)
    for i in range(12):
        shape = SIZES[i % len(SIZES)]
        s = [2.0, 0.05, fscale(rng, -2, -0.5), 0.1, 0.0473, 0.03][i % 6]
        z = [100, 0, 255, 128, int(rng.integers(0, 256)), 37][(i // 2) % 6]
        x = deq_exact(np.arange(256), s, z)
        model = quant((np.clip((x + f32(3)).astype(f32), f32(0), f32(6)) / f32(6)).astype(f32), 0.00390625, 0)
        table_case("hardsigmoid", rng, i, s, z, shape, model, F.hardsigmoid, {"scale": s, "zero_point": z})


def gen_leaky_relu():
    rng = np.random.default_rng(403)
    for i in range(12):
        shape = SIZES[i % len(SIZES)]
        s = [2.0, 0.05, fscale(rng, -2, -0.5), 0.1][i % 4]
        z = [100, 0, 255, 128, int(rng.integers(0, 256))][(i // 2) % 5]
        slope = [0.01, -0.5, 0.2, 1.5, 0.0, float(f32(0.1337))][i % 6]
        so = float(f32([4.0, 0.03, fscale(rng, -2, -0.5)][i % 3]))
        zo = [0, 128, 255, int(rng.integers(0, 256))][i % 4]
        x = deq_exact(np.arange(256), s, z)
        y = np.where(x > 0, x, (x * f32(slope)).astype(f32)).astype(f32)
        model = quant(y, so, zo)
        attrs = {"scale": s, "zero_point": z, "out_scale": so, "out_zero_point": zo}
        if slope != 0.01 or i % 2:
            attrs["negative_slope"] = slope
        fn = lambda q: torch.ops.quantized.leaky_relu(q, slope, False, so, zo)  # noqa: E731
        table_case("leaky_relu", rng, i, s, z, shape, model, fn, attrs)


def gen_elu():
    rng = np.random.default_rng(404)
    for i in range(12):
        shape = SIZES[i % len(SIZES)]
        s = [2.0, 0.05, fscale(rng, -2, -0.5), 0.1][i % 4]
        z = [100, 0, 255, 128, int(rng.integers(0, 256))][(i // 2) % 5]
        alpha = [1.0, 3.0, 0.5, float(f32(1.6732632))][i % 4]
        so = float(f32([4.0, 0.03, fscale(rng, -2, -0.5)][i % 3]))
        zo = [0, 128, 255, int(rng.integers(0, 256))][i % 4]
        x = deq_exact(np.arange(256), s, z).astype(np.float64)
        ref = np.where(x >= 0, x, np.expm1(x) * float(f32(alpha)))
        model = quant(ref.astype(f32), so, zo)
        attrs = {"scale": s, "zero_point": z, "out_scale": so, "out_zero_point": zo}
        if alpha != 1.0 or i % 2:
            attrs["alpha"] = alpha
        fn = lambda q: torch.ops.quantized.elu(q, so, zo, alpha)  # noqa: E731
        table_case("elu", rng, i, s, z, shape, model, fn, attrs, margin_ref=ref, so=so)


def gen_tanh():
    rng = np.random.default_rng(405)
    for i in range(12):
        shape = SIZES[i % len(SIZES)]
        s = [2.0, 0.05, fscale(rng, -2, -0.5), 0.1, 0.0473, 0.02][i % 6]
        z = [100, 0, 255, 128, int(rng.integers(0, 256)), 64][(i // 2) % 6]
        ref = np.tanh(deq_exact(np.arange(256), s, z).astype(np.float64))
        model = quant(ref.astype(f32), 0.0078125, 128)
        table_case("tanh", rng, i, s, z, shape, model, torch.tanh, {"scale": s, "zero_point": z}, margin_ref=ref, so=0.0078125)


def gelu_ref(x, approximate):
    x = x.astype(np.float64)
    if approximate == "tanh":
        beta = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5
        cube = (x.astype(f32) * x.astype(f32) * x.astype(f32)).astype(f32).astype(np.float64)
        return 0.5 * x * (1.0 + np.tanh(beta * (x + 0.044715 * cube)))
    return x * 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2.0)) for v in x]))


def gen_gelu():
    rng = np.random.default_rng(406)
    for i in range(14):
        shape = SIZES[i % len(SIZES)]
        s = [2.0, 0.05, fscale(rng, -2, -0.5), 0.1, 0.0473, 0.02, 0.3][i % 7]
        z = [100, 0, 255, 128, int(rng.integers(0, 256)), 64][(i // 2) % 6]
        approximate = "tanh" if i % 2 else "none"
        ref = gelu_ref(deq_exact(np.arange(256), s, z), approximate)
        so = float(f32(s))
        model = quant(ref.astype(f32), so, z)
        attrs = {"scale": s, "zero_point": z}
        if approximate == "tanh" or i % 4 == 0:
            attrs["approximate"] = approximate
        fn = lambda q: F.gelu(q, approximate=approximate)  # noqa: E731
        table_case("gelu", rng, i, s, z, shape, model, fn, attrs, margin_ref=ref, so=so)


# ------------------------------------------------------------------ softmax
def softmax_ref(x, dim):
    m = x.max(axis=dim, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=dim, keepdims=True)


def gen_softmax():
    rng = np.random.default_rng(407)
    cases = [((1, 16, 2, 2), 1), ((4, 10), -1), ((4, 10), 0), ((2, 3, 33), 2), ((3, 5, 7), 1), ((1, 1000), 1), ((2, 8, 3, 3), -3),
             ((7,), 0), ((5, 1), 1), ((2, 4, 6, 5), 3)]
    for i, (shape, dim) in enumerate(cases):
        s = [0.05, 0.1, fscale(rng, -2, -0.5), 0.25][i % 4]
        z = [128, 0, 255, int(rng.integers(0, 256))][i % 4]
        so, zo = [(1.0 / 256, 0), (0.002, 0), (float(f32(1.0 / 255)), 3), (1.0 / 128, 10)][i % 4]
        # Redraw the lines until every output is far from a rounding boundary.
        for _ in range(2000):
            x = rng.integers(0, 256, shape).astype(np.uint8)
            ref = softmax_ref(deq_exact(x, s, z).astype(np.float64), dim)
            t = ref * float(f32(1.0) / f32(so))
            if (np.abs(t - (np.floor(t) + 0.5)) >= 1e-3).all():
                break
        else:
            raise RuntimeError("softmax: no input far from boundaries")
        y = torch.ops.quantized.softmax(tq(x, s, z), dim, so, zo).int_repr().numpy()
        model = np.clip(np.rint(t) + zo, 0, 255)
        assert (y == model).all(), "softmax"
        save_case("softmax", "case%02d_%s_dim%d" % (i, shape_name(shape), dim), {"x": x}, {"y": y},
                  {"scale": s, "zero_point": z, "dim": dim, "out_scale": so, "out_zero_point": zo},
                  common.TORCH_SRC + "; inputs >= 0.001 of an output step from rounding boundaries (float64 reference)")


# ------------------------------------------------------------------ mul_relu
def gen_mul_relu():
    rng = np.random.default_rng(408)
    cases = [((7,), (7,)), ((65,), (65,)), ((3, 50), (3, 50)), ((2, 3, 4, 5), (2, 3, 4, 5)), ((4, 33), (4, 1)),
             ((1, 8, 4, 4), (1, 8, 1, 1)), ((130,), (130,)), ((2, 3, 4), (4,))]
    for i, (sa_shape, sb_shape) in enumerate(cases):
        if i % 3 == 0:
            sa, sb, so = 0.0625, 0.125, 0.25
        elif i % 3 == 1:
            sa, sb, so = (float(v) for v in 10.0 ** rng.uniform(-2.5, -0.5, 3))
        else:
            sa, sb, so = fscale(rng), fscale(rng), fscale(rng, -2, 0)
        za, zb, zo = (int(v) for v in rng.integers(0, 256, 3))
        if i % 4 == 1:
            za, zb, zo = 255, 0, 0
        if i % 4 == 3:
            zo = 255
        a = rng.integers(0, 256, sa_shape).astype(np.uint8)
        b = rng.integers(0, 256, sb_shape).astype(np.uint8)
        y = torch.ops.quantized.mul_relu(tq(a, sa, za), tq(b, sb, zb), so, zo).int_repr().numpy()
        c = (a.astype(np.int64) - za) * (b.astype(np.int64) - zb)
        m = f32(sa * sb * (1.0 / so))
        ym = np.clip(zo + np.rint((c.astype(f32) * m).astype(f32)), zo, 255)
        assert (ym == y).all(), "mul_relu formula"
        attrs = {"a_scale": sa, "a_zero_point": za, "b_scale": sb, "b_zero_point": zb, "out_scale": so, "out_zero_point": zo}
        save_case("mul_relu", "case%02d_a%s_b%s" % (i, shape_name(sa_shape), shape_name(sb_shape)), {"a": a, "b": b}, {"y": y}, attrs,
                  common.TORCH_SRC)


def generate():
    gen_clamps()
    gen_hardsigmoid()
    gen_leaky_relu()
    gen_elu()
    gen_tanh()
    gen_gelu()
    gen_softmax()
    gen_mul_relu()
