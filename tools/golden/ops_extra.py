"""Cases for the quantized ops rquant has beyond CONFORMANCE.md's two tables
(rquant_nn::qops and the 2-bit embedding bag): add_scalar(_relu), mul_scalar(_relu),
cat_relu, prelu, celu, threshold, clamp, max_pool1d, max_pool3d, avg_pool3d,
adaptive_avg_pool3d, conv_transpose1d, conv_transpose3d, batch_norm1d(_relu),
batch_norm3d(_relu), embedding_bag_2bit.

Every case is torch's output, asserted equal to a NumPy model of rquant's formula
(docs/numerics.md §19), except the transposed convolutions, which follow
ops_conv.py's scheme (exact model validated against torch where torch's AVX2
kernels cannot saturate; the saturating regime stores the exact model's output).
The activations' inputs avoid the codes where ATen's FMA and exact dequantize
differ (as ops_act.py); CELU's also sit >= 0.002 of an output step from a rounding
boundary."""
import numpy as np
import torch
import torch.nn.functional as F

import common
from common import f32, save_case
from ops_act import agreeing_codes, far_codes, draw, shape_name, quant
from ops_conv import STATS
from ops_elementwise import deq_exact, fscale, tq
from ops_gemm import MODEL_SRC, make_weights, make_x, pick_out_scale, rand_scale, requant_static, tq_w, tq_x
from ops_norm import bn_coefficients, fma_or_not
from ops_conv import bag_model

SIZES = [(1,), (7,), (31,), (33,), (64,), (65,), (100,), (130,), (2, 3, 5), (1, 4, 3, 3)]
CL_NOTE = "; NC(D)HW-contiguous input with C > 1 and more than one spatial element (not also channels-last)"


def u8(rng, shape):
    return rng.integers(0, 256, shape).astype(np.uint8)


# ------------------------------------------------------------------ add_scalar / mul_scalar
def requantize_from_int(multiplier, zp, v):
    """at::native::requantize_from_int<quint8>: clamp(zp + rne(f32(v) * multiplier))."""
    return np.clip(zp + np.rint((np.asarray(v).astype(f32) * f32(multiplier)).astype(f32)), 0, 255).astype(np.uint8)


def add_scalar_model(a, s, z, b, relu):
    cq = int(np.rint(b / s))
    shifted = z - cq
    if 0 <= shifted <= 255:
        y = np.maximum(a, shifted) if relu else a.copy()
        return y.astype(np.uint8), s, shifted
    if shifted < 0:
        sp, zp = (255.0 - shifted) / 255.0 * s, 0
    else:
        sp, zp = (shifted - 0.0) / 255.0 * s, 255
    m = f32(s) * (f32(1.0) / f32(sp))
    y = requantize_from_int(m, zp, a.astype(np.int64) - z + cq)
    if relu:
        y = np.maximum(y, zp)
    return y.astype(np.uint8), sp, zp


def mul_scalar_model(a, s, z, b, relu):
    if b > 0:
        return (np.maximum(a, z) if relu else a.copy()).astype(np.uint8), b * s, z
    if b == 0:
        return np.zeros_like(a), 1.0, 0
    zp = 255 - z
    y = 255 - a
    return (np.maximum(y, zp) if relu else y).astype(np.uint8), abs(b) * s, zp


def gen_scalar_ops():
    rng = np.random.default_rng(901)
    # (scale, zero_point, b): in-range shifts, saturation below and above (the
    # requantizing path), ties of b/scale (to even), b = 0, negative b.
    add_cfg = [(0.1, 128, 0.7), (0.05, 0, 3.0), (0.05, 255, -3.0), (0.03, 100, 3.5), (0.03, 100, -3.9),
               (0.25, 128, 0.125), (0.25, 128, 0.375), (0.1, 10, 0.0), (float(f32(0.0237)), 200, -12.34),
               (0.5, 0, -0.25), (2.0, 255, 1000.0), (0.0473, 77, 6.1)]
    mul_cfg = [(0.1, 128, 0.7), (0.05, 0, 3.0), (0.05, 255, -3.0), (0.03, 100, -0.4), (0.1, 10, 0.0),
               (float(f32(0.0237)), 200, -1.0), (0.5, 0, 1e-3), (2.0, 77, -250.0)]
    for op, cfgs, model in (("add_scalar", add_cfg, add_scalar_model), ("add_scalar_relu", add_cfg[:8], add_scalar_model),
                            ("mul_scalar", mul_cfg, mul_scalar_model), ("mul_scalar_relu", mul_cfg[:6], mul_scalar_model)):
        relu = op.endswith("relu")
        f = getattr(torch.ops.quantized, op)
        for i, (s, z, b) in enumerate(cfgs):
            shape = SIZES[(i + 3 * relu) % len(SIZES)]
            a = u8(rng, shape)
            a.reshape(-1)[0] = 255
            a.reshape(-1)[-1] = 0
            qy = f(tq(a, s, z), b)
            y = qy.int_repr().numpy()
            ym, sp, zp = model(a, s, z, b, relu)
            assert (y == ym).all() and qy.q_scale() == sp and qy.q_zero_point() == zp, (op, s, z, b)
            name = "case%02d_zp%d_b%s_%s" % (i, z, ("%g" % b).replace("-", "m"), shape_name(shape))
            save_case(op, name, {"a": a}, {"y": y, "y_scale": np.array([sp], np.float64), "y_zero_point": np.array([zp], np.int64)},
                      {"a_scale": s, "a_zero_point": z, "b": b}, common.TORCH_SRC)


# ------------------------------------------------------------------ cat_relu
def gen_cat_relu():
    rng = np.random.default_rng(902)
    cfgs = [((2, 3, 4, 5), 1, 2), ((2, 3, 4, 5), 0, 3), ((2, 3, 4, 5), -1, 2), ((3, 5), 1, 4), ((3, 5), -2, 2),
            ((2, 4, 3), 2, 3), ((1, 2, 3, 3), 1, 2), ((65,), 0, 2), ((2, 3, 4, 5), 3, 3), ((4, 33), 0, 2)]
    for idx, (base, dim, n) in enumerate(cfgs):
        xs, ss, zs = [], [], []
        for i in range(n):
            shp = list(base)
            shp[dim] = int(rng.integers(1, 4))
            xs.append(u8(rng, shp))
            same = idx % 4 == 0 and i > 0
            ss.append(ss[0] if same else float(10.0 ** rng.uniform(-2, -0.5)))
            zs.append(zs[0] if same else int(rng.integers(0, 256)))
        so, zo = (ss[0], zs[0]) if idx % 4 == 0 else (float(10.0 ** rng.uniform(-2, -0.3)), [0, 255, 128, int(rng.integers(0, 256))][idx % 4])
        if len(base) == 4 and dim % 4 == 1:
            assert any(not (x.shape[1] == 1 or x.shape[2] * x.shape[3] == 1) for x in xs)
        y = torch.ops.quantized.cat_relu([tq(x, s, z) for x, s, z in zip(xs, ss, zs)], dim, so, zo).int_repr().numpy()
        ym = np.concatenate([np.clip(np.rint((deq_exact(x, s, z) * (f32(1) / f32(so))).astype(f32)) + zo, zo, 255)
                             for x, s, z in zip(xs, ss, zs)], axis=dim)
        assert (ym == y).all(), "cat_relu formula"
        save_case("cat_relu", "case%02d_n%d_%dd_dim%d_zo%d" % (idx, n, len(base), dim, zo), {"x%d" % i: x for i, x in enumerate(xs)}, {"y": y},
                  {"dim": dim, "scales": ss, "zero_points": zs, "out_scale": so, "out_zero_point": zo},
                  common.TORCH_SRC + "; NCHW inputs (not PyTorch's channels-last fast path)")


# ------------------------------------------------------------------ prelu
def prelu_model(x, s, z, w, ws, wz, so, zo):
    C = w.size
    shape = [1] * x.ndim
    if x.ndim > 1:
        shape[1] = C
    wb = np.broadcast_to(w.reshape(shape).astype(np.int64), x.shape)
    w1 = int(quant(1.0, ws, wz)) - wz
    q = x.astype(np.int64)
    acc = (np.maximum(q, z) - z) * w1 + (np.minimum(q, z) - z) * (wb - wz)
    m = (f32(s) * f32(ws)).astype(f32) * (f32(1.0) / f32(so))
    return requantize_from_int(m, zo, acc)


def gen_prelu():
    rng = np.random.default_rng(903)
    # (x shape, channels of the weight, scale, zp, weight scale, weight zp, out scale, out zp)
    cfgs = [((7,), 1, 0.05, 128, 0.01, 0, 0.05, 128), ((2, 3, 7), 3, 0.04, 120, 0.004, 100, 0.05, 110),
            ((130,), 1, 0.1, 0, 0.002, 128, 0.07, 0), ((2, 4, 3, 3), 4, float(f32(0.0237)), 255, 0.01, 30, 0.03, 255),
            ((1, 65), 65, 0.02, 200, 0.003, 250, 0.02, 10), ((4, 33), 1, 0.05, 64, 0.001, 5, 0.04, 64),
            ((2, 3, 5), 1, 0.1, 100, 1.0 / 128, 0, 0.1, 100), ((3, 2, 11), 2, 0.03, 17, 0.02, 200, 0.011, 240),
            ((1, 8, 2, 2), 8, 0.25, 128, 0.05, 128, 0.5, 128), ((31,), 1, 0.5, 255, 0.0039, 0, 0.25, 0),
            ((2, 64), 64, 0.01, 127, 0.0125, 77, 0.02, 99), ((1, 1, 100), 1, 0.05, 50, 0.004, 251, 0.05, 50)]
    for i, (shape, C, s, z, ws, wz, so, zo) in enumerate(cfgs):
        x = u8(rng, shape)
        w = u8(rng, (C,))
        # a weight of exactly quantize(1.0) and one at each end of the range
        w[0] = [quant(1.0, ws, wz), 0, 255][i % 3]
        y = torch.ops.quantized.prelu(tq(x, s, z), tq(w, ws, wz), so, zo).int_repr().numpy()
        assert (y == prelu_model(x, s, z, w, ws, wz, so, zo)).all(), ("prelu", i)
        save_case("prelu", "case%02d_%s_c%d_zp%d_wzp%d" % (i, shape_name(shape), C, z, wz), {"x": x, "weight": w}, {"y": y},
                  {"scale": s, "zero_point": z, "weight_scale": ws, "weight_zero_point": wz, "out_scale": so, "out_zero_point": zo},
                  common.TORCH_SRC + ("; quantize(1.0) saturates under the weight's qparams" if quant(1.0, ws, wz) in (0, 255) else ""))


# ------------------------------------------------------------------ celu / threshold / clamp
def table_case(op, rng, i, s, z, shape, model, torch_fn, attrs, src, codes):
    assert len(codes) > 8, (op, s, z)
    x = draw(rng, codes, shape)
    y = torch_fn(tq(x, s, z)).int_repr().numpy()
    assert (y == model[x.astype(np.int64)]).all(), (op, i)
    save_case(op, "case%02d_zp%d_%s" % (i, z, shape_name(shape)), {"x": x}, {"y": y}, attrs, src)


def gen_celu():
    rng = np.random.default_rng(904)
    from ops_act import SIZES as ASIZES, SRC_SMOOTH
    for i in range(12):
        shape = ASIZES[i % len(ASIZES)]
        s = [2.0, 0.05, fscale(rng, -2, -0.5), 0.1][i % 4]
        z = [100, 0, 255, 128, int(rng.integers(0, 256))][(i // 2) % 5]
        alpha = [1.0, 0.8, 3.0, 0.5, -1.5, float(f32(1.6732632))][i % 6]
        so = float(f32([4.0, 0.03, fscale(rng, -2, -0.5)][i % 3]))
        zo = [0, 128, 255, int(rng.integers(0, 256))][i % 4]
        v = deq_exact(np.arange(256), s, z)
        isc = f32(1.0 / float(f32(alpha)))
        e = np.expm1((v * isc).astype(f32).astype(np.float64))
        ref = np.where(v >= 0, v.astype(np.float64), e * float(f32(alpha)))
        model = quant(np.where(v >= 0, v, (e.astype(f32) * f32(alpha)).astype(f32)), so, zo)
        attrs = {"scale": s, "zero_point": z, "out_scale": so, "out_zero_point": zo}
        if alpha != 1.0 or i % 2:
            attrs["alpha"] = alpha
        fn = lambda q: torch.ops.quantized.celu(q, so, zo, alpha)  # noqa: E731
        table_case("celu", rng, i, s, z, shape, model, fn, attrs, common.TORCH_SRC + SRC_SMOOTH,
                   far_codes(agreeing_codes(s, z), ref, so))


def gen_threshold():
    rng = np.random.default_rng(905)
    from ops_act import SRC_PATHS
    for i in range(10):
        shape = SIZES[(i + 1) % len(SIZES)]
        s = [0.05, 0.1, float(f32(0.0237)), 0.25, 2.0][i % 5]
        z = [128, 0, 255, 77, int(rng.integers(0, 256))][(i // 2) % 5]
        codes = agreeing_codes(s, z)
        v = deq_exact(np.arange(256), s, z)
        # thresholds on a code's exact value (x > threshold is false there), between codes,
        # below / above every value; values on a tie, saturating, negative
        thr = [float(v[int(codes[len(codes) // 2])]), 0.0, -1.0, 0.13, float(v[0]) - 1.0, float(v[255]) + 1.0,
               float(v[int(codes[len(codes) // 3])]), -0.5, 0.7, 1e-3][i]
        value = [-0.5, 0.0, 2.5 * s, 3.5 * s, 0.3, -0.3, 1e3 * s, -1e3 * s, float(v[int(codes[1])]), 0.125][i]
        model = quant(np.where(v > f32(thr), v, f32(value)).astype(f32), s, z)
        attrs = {"scale": s, "zero_point": z, "threshold": thr, "value": value}
        table_case("threshold", rng, i, s, z, shape, model, lambda q: torch.threshold(q, thr, value), attrs,  # noqa: B023
                   common.TORCH_SRC + SRC_PATHS, codes)


def gen_clamp():
    rng = np.random.default_rng(906)
    bounds = [(-1.0, 1.0), (0.0, None), (None, 0.5), (-0.125, 0.375), (2.0, -2.0), (0.05, 0.05), (None, -3.0),
              (-1e3, 1e3), (1.0, None), (-0.3, 6.0)]
    for i, (lo_v, hi_v) in enumerate(bounds):
        shape = SIZES[(i + 2) % len(SIZES)]
        s = [0.25, 0.05, 0.0473, 0.1, float(f32(0.0171)), 0.5, 0.03][i % 7]
        z = [128, 0, 255, 77, 10, 250, 128][i % 7]
        x = u8(rng, shape)
        y = torch.clamp(tq(x, s, z), lo_v, hi_v).int_repr().numpy()
        lo = 0 if lo_v is None else quant(lo_v, s, z)
        hi = 255 if hi_v is None else quant(hi_v, s, z)
        assert (y == np.minimum(np.maximum(x, lo), hi)).all(), ("clamp", i)
        attrs = {"scale": s, "zero_point": z}
        if lo_v is not None:
            attrs["min"] = lo_v
        if hi_v is not None:
            attrs["max"] = hi_v
        name = "case%02d_%s_%s_zp%d_%s" % (i, ("%g" % lo_v).replace("-", "m") if lo_v is not None else "none",
                                           ("%g" % hi_v).replace("-", "m") if hi_v is not None else "none", z, shape_name(shape))
        save_case("clamp", name, {"x": x}, {"y": y}, attrs, common.TORCH_SRC + "; bounds quantize(min), quantize(max) (ties included)")


# ------------------------------------------------------------------ pooling
def gen_max_pool1d():
    rng = np.random.default_rng(907)
    # (shape, kernel, stride, padding, dilation, ceil_mode)
    cfgs = [((2, 3, 11), 3, 2, 1, 1, False), ((1, 4, 7), 2, 2, 0, 1, True), ((3, 10), 3, 1, 1, 1, False),
            ((2, 2, 16), 4, 3, 2, 1, True), ((1, 3, 9), 3, 1, 0, 2, False), ((1, 5, 13), 2, 3, 1, 3, True),
            ((2, 3, 5), 5, 1, 2, 1, False), ((1, 2, 8), 1, 2, 0, 1, False), ((4, 33), 3, 3, 1, 2, True),
            ((1, 1, 130), 7, 5, 3, 1, True)]
    for i, (shape, k, st, p, d, ceil) in enumerate(cfgs):
        x = u8(rng, shape)
        y = torch.max_pool1d(tq(x, 0.1, 7), k, st, p, d, ceil).int_repr().numpy()
        yr = torch.max_pool1d(torch.from_numpy(x.astype(np.float32)), k, st, p, d, ceil).numpy()
        assert (yr == y).all(), ("max_pool1d", i)
        save_case("max_pool1d", "case%02d_%s_k%d_s%d_p%d_d%d_ceil%d" % (i, shape_name(shape), k, st, p, d, ceil), {"x": x}, {"y": y},
                  {"kernel_size": [k], "stride": [st], "padding": [p], "dilation": [d], "ceil_mode": ceil}, common.TORCH_SRC)


POOL3D = [((1, 2, 4, 7, 6), (2, 3, 2), (1, 2, 2), (1, 1, 0)), ((2, 3, 5, 5, 5), (2, 2, 2), (2, 2, 2), (0, 0, 0)),
          ((1, 9, 3, 4, 5), (3, 3, 3), (1, 1, 1), (1, 1, 1)), ((1, 33, 4, 3, 3), (2, 3, 1), (2, 1, 1), (1, 1, 0)),
          ((1, 2, 6, 6, 7), (3, 2, 3), (2, 3, 2), (1, 1, 1)), ((1, 40, 2, 2, 3), (1, 2, 2), (1, 1, 2), (0, 1, 1)),
          ((2, 2, 5, 3, 6), (4, 3, 4), (3, 2, 3), (2, 1, 2)), ((1, 3, 7, 5, 4), (2, 2, 2), (3, 3, 3), (0, 0, 0))]


def gen_max_pool3d():
    rng = np.random.default_rng(908)
    for i, (shape, k, st, p) in enumerate(POOL3D):
        for variant in (0, 1):
            d = (1, 1, 1) if variant == 0 else (2, 1, 2)
            ceil = bool((i + variant) % 2)
            span_ok = all(shape[2 + a] + 2 * p[a] >= d[a] * (k[a] - 1) + 1 for a in range(3))
            if not span_ok:
                continue
            x = u8(rng, shape)
            y = F.max_pool3d(tq(x, 0.1, 7), k, st, p, d, ceil).int_repr().numpy()
            yr = F.max_pool3d(torch.from_numpy(x.astype(np.float32)), k, st, p, d, ceil).numpy()
            assert (yr == y).all(), ("max_pool3d", i)
            save_case("max_pool3d", "case%02d_%s_k%s_s%s_p%s_d%s_ceil%d" % (2 * i + variant, shape_name(shape), shape_name(k), shape_name(st),
                                                                            shape_name(p), shape_name(d), ceil),
                      {"x": x}, {"y": y}, {"kernel_size": list(k), "stride": list(st), "padding": list(p), "dilation": list(d),
                                           "ceil_mode": ceil}, common.TORCH_SRC)


def pool_out(n, k, s, p, d, ceil):
    """PyTorch's pooling_output_shape."""
    num = n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    o = num // s + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def avg_pool3d_model(x, z, k, st, p, ceil, cip, dov):
    N, C = x.shape[:2]
    dims = x.shape[2:]
    osz = [pool_out(dims[a], k[a], st[a], p[a], 1, ceil) for a in range(3)]
    y = np.zeros((N, C) + tuple(osz), np.uint8)
    for o in np.ndindex(*osz):
        s0, e0, pool = [], [], 1
        for a in range(3):
            st_ = o[a] * st[a] - p[a]
            en = min(st_ + k[a], dims[a] + p[a])
            pool *= en - st_
            s0.append(max(st_, 0))
            e0.append(min(en, dims[a]))
        size = (e0[0] - s0[0]) * (e0[1] - s0[1]) * (e0[2] - s0[2])
        div = dov if dov is not None else (pool if cip else size)
        acc = x[:, :, s0[0]:e0[0], s0[1]:e0[1], s0[2]:e0[2]].astype(np.int64).sum((2, 3, 4)) - z * size
        m = f32(1.0) / f32(div)
        inv = f32(1.0) / (f32(1.0) / m)
        y[(slice(None), slice(None)) + o] = np.clip(z + np.rint((acc.astype(f32) * inv).astype(f32)), 0, 255)
    return y


def gen_avg_pool3d():
    rng = np.random.default_rng(909)
    idx = 0
    for i, (shape, k, st, p) in enumerate(POOL3D):
        for variant in (0, 1):
            ceil = bool(variant)
            cip = (i + variant) % 3 != 1
            dov = [None, None, None, 5, None, 7][(i + 2 * variant) % 6]
            z = [129, 0, 255, 7, 128, 33, 3, 250][(i + variant) % 8]
            s = [0.05, 0.1, 0.0473][idx % 3]
            x = u8(rng, shape)
            y = F.avg_pool3d(tq(x, s, z), k, st, p, ceil, cip, dov).int_repr().numpy()
            assert (avg_pool3d_model(x, z, k, st, p, ceil, cip, dov) == y).all(), ("avg_pool3d", i, variant)
            attrs = {"kernel_size": list(k), "stride": list(st), "padding": list(p), "ceil_mode": ceil, "count_include_pad": cip,
                     "scale": s, "zero_point": z}
            if dov is not None:
                attrs["divisor_override"] = dov
            save_case("avg_pool3d", "case%02d_%s_k%s_s%s_p%s_ceil%d_cip%d%s_zp%d" % (
                idx, shape_name(shape), shape_name(k), shape_name(st), shape_name(p), ceil, cip,
                "_div%d" % dov if dov else "", z), {"x": x}, {"y": y}, attrs,
                common.TORCH_SRC + "; PyTorch's channels-last kernel (its only one): zero point added after rounding")
            idx += 1


def adaptive_window(o, n, out):
    return (o * n) // out, -((-(o + 1) * n) // out)


def gen_adaptive_avg_pool3d():
    rng = np.random.default_rng(910)
    cfgs = [((1, 2, 4, 6, 6), (2, 3, 3)), ((2, 3, 5, 7, 7), (3, 3, 3)), ((1, 4, 3, 5, 9), (2, 2, 4)), ((1, 2, 6, 6, 6), (1, 1, 1)),
            ((1, 3, 4, 4, 4), (4, 4, 4)), ((2, 2, 7, 3, 5), (3, 2, 4)), ((1, 5, 2, 9, 9), (1, 5, 5)), ((3, 4, 5, 2, 3), (2, 2, 1)),
            ((2, 6, 5, 5), (3, 2, 4)), ((1, 2, 9, 8, 10), (4, 3, 6))]
    for i, (shape, osz) in enumerate(cfgs):
        z = [14, 0, 255, 128, 77][i % 5]
        x = u8(rng, shape)
        x5 = x if x.ndim == 5 else x[None]
        assert x5.shape[1] > 1 and np.prod(x5.shape[2:]) > 1
        y = F.adaptive_avg_pool3d(tq(x, 0.05, z), osz).int_repr().numpy()
        D, H, W = x5.shape[2:]
        ym = np.zeros(x5.shape[:2] + tuple(osz), np.uint8)
        for od in range(osz[0]):
            d0, d1 = adaptive_window(od, D, osz[0])
            rd = f32(1.0 / (d1 - d0))
            for oh in range(osz[1]):
                h0, h1 = adaptive_window(oh, H, osz[1])
                rdh = f32(rd / f32(h1 - h0))
                for ow in range(osz[2]):
                    w0, w1 = adaptive_window(ow, W, osz[2])
                    r = f32(rdh / f32(w1 - w0))
                    ssum = x5[:, :, d0:d1, h0:h1, w0:w1].astype(np.int64).sum((2, 3, 4))
                    ym[:, :, od, oh, ow] = np.clip(np.rint((ssum.astype(f32) * r).astype(f32)), 0, 255)
        assert (ym.reshape(y.shape) == y).all(), ("adaptive_avg_pool3d", i)
        save_case("adaptive_avg_pool3d", "case%02d_%s_to%s" % (i, shape_name(shape), shape_name(osz)), {"x": x}, {"y": y},
                  {"output_size": list(osz), "scale": 0.05, "zero_point": z}, common.TORCH_SRC + CL_NOTE + " (the NCDHW kernel)")


# ------------------------------------------------------------------ transposed conv1d / conv3d
def conv_transpose_acc(x, xz, w, wz, st, pad, opad, dil, g):
    """Exact accumulator of an N-d transposed convolution (x: [N, C, *sp], w: [C, O/g, *k]), by scattering."""
    nd = x.ndim - 2
    N, C = x.shape[:2]
    sp, ks = x.shape[2:], w.shape[2:]
    Og = w.shape[1]
    Cg = C // g
    osz = [(sp[a] - 1) * st[a] - 2 * pad[a] + dil[a] * (ks[a] - 1) + opad[a] + 1 for a in range(nd)]
    full = [(sp[a] - 1) * st[a] + dil[a] * (ks[a] - 1) + 1 + opad[a] for a in range(nd)]
    xi = x.astype(np.int64) - xz
    wi = w.astype(np.int64) - int(np.asarray(wz).reshape(-1)[0])
    out = np.zeros((N, Og * g) + tuple(full), np.int64)
    for gi in range(g):
        for kidx in np.ndindex(*ks):
            contrib = np.einsum("nc...,co->no...", xi[:, gi * Cg:(gi + 1) * Cg], wi[(slice(gi * Cg, (gi + 1) * Cg), slice(None)) + kidx])
            sl = tuple(slice(kidx[a] * dil[a], kidx[a] * dil[a] + st[a] * (sp[a] - 1) + 1, st[a]) for a in range(nd))
            out[(slice(None), slice(gi * Og, (gi + 1) * Og)) + sl] += contrib
    return out[(slice(None), slice(None)) + tuple(slice(pad[a], pad[a] + osz[a]) for a in range(nd))]


def run_torch_transposed(kind, x, xs, xz, w, ws, wz, bias, p, out_s, out_zp):
    torch.backends.quantized.engine = "fbgemm"
    try:
        b = None if bias is None else torch.from_numpy(bias)
        prepack = getattr(torch.ops.quantized, kind + "_prepack")
        pk = prepack(tq_w(w, ws, wz, False), b, p["stride"], p["padding"], p["output_padding"], p["dilation"], p["groups"])
        return getattr(torch.ops.quantized, kind)(tq_x(x, xs, xz), pk, out_s, out_zp).int_repr().numpy()
    finally:
        torch.backends.quantized.engine = "x86"


def transposed_case(rng, kind, geom, has_bias, xz, xmode, wmode, wz_mode, omode, save=None):
    N, C, sp, O, ks, st, pad, dil, g, opad = geom
    x = make_x(rng, (N, C) + tuple(sp), xmode, xz)
    w = make_weights(rng, (C, O // g) + tuple(ks), wmode)
    ws = np.array([rand_scale(rng) * 0.1], np.float64)
    wz = np.zeros(1, np.int64) if wz_mode == "zero" else rng.integers(-10, 11, 1).astype(np.int64)
    xs = rand_scale(rng)
    acc = conv_transpose_acc(x, xz, w, wz, st, pad, opad, dil, g)
    atws = (f32(xs) * ws.astype(f32)).astype(f32)
    out_s = pick_out_scale(rng, acc, float(atws.max()), omode)
    out_zp = int(rng.integers(0, 256)) if omode == "normal" else int(rng.choice([0, 255, 128]))
    bias = (rng.standard_normal(O) * float(np.abs(acc).mean() + 1) * float(atws.max())).astype(f32) if has_bias else None
    y = np.ascontiguousarray(np.moveaxis(requant_static(np.moveaxis(acc, 1, -1), xs, ws, bias, out_s, out_zp, False, False), -1, 1))
    p = {"stride": list(st), "padding": list(pad), "output_padding": list(opad), "dilation": list(dil), "groups": g}
    wmax = int(np.abs(w.astype(np.int32)).max())
    exact = wmax <= 64 or (xmode == "7bit" and xz < 128)
    yt = run_torch_transposed(kind, x, xs, xz, w, ws, wz, bias, p, out_s, out_zp)
    src = MODEL_SRC
    if exact:
        assert common.bits_equal(yt, y), ("%s model disagrees with torch" % kind, geom, xz, xmode, wmode)
        src = common.TORCH_SRC + "; transposed conv via the fbgemm engine; equal to the exact model"
        STATS[kind + "_validated"] = STATS.get(kind + "_validated", 0) + 1
    else:
        STATS[kind + "_full"] = STATS.get(kind + "_full", 0) + 1
        STATS[kind + "_full_diff"] = STATS.get(kind + "_full_diff", 0) + int(not common.bits_equal(yt, y))
    if save:
        attrs = {"x_scale": xs, "x_zero_point": xz, "out_scale": out_s, "out_zero_point": out_zp, "w_qscheme": "per_tensor"}
        attrs.update(p)
        ins = {"x": x, "w": w, "w_scales": ws, "w_zero_points": wz}
        if bias is not None:
            ins["bias"] = bias
        save_case(kind, save, ins, {"y": y}, attrs, src)


def transposed_sweep_and_save(kind, rng, geoms, nsweep):
    for i in range(nsweep):
        transposed_case(rng, kind, geoms[i % len(geoms)], bool(i % 3), int(rng.choice([0, 37, 128, 255])), "7bit" if i % 3 else "full",
                        "full" if i % 3 else "small", "nz" if i % 4 == 1 else "zero", "normal" if i % 6 else "tiny")
    idx = 0
    for gm in geoms:
        for v in range(2):
            xz = [0, 128, 255, 31][(idx + v) % 4]
            xmode = "7bit" if v == 0 else "full"
            wmode = "small" if idx % 5 == 4 else "full"
            has_bias = idx % 4 != 2
            omode = ["normal", "normal", "tiny", "normal", "huge"][idx % 5]
            wz_mode = "nz" if idx % 5 == 3 else "zero"
            N, C, sp, O, ks, st, pad, dil, g, opad = gm
            name = "n%dc%d_%s_o%d_k%s_s%s_p%s_d%s_g%d_op%s_%s_xzp%d_%s_%s_%02d" % (
                N, C, shape_name(sp), O, shape_name(ks), shape_name(st), shape_name(pad), shape_name(dil), g, shape_name(opad),
                "bias" if has_bias else "nobias", xz, xmode, omode, idx)
            transposed_case(rng, kind, gm, has_bias, xz, xmode, wmode, wz_mode, omode, save=name)
            idx += 1


def gen_conv_transpose1d():
    rng = np.random.default_rng(911)
    # N, C, (L,), O, (k,), stride, padding, dilation, groups, output_padding
    geoms = [
        (1, 4, (5,), 3, (3,), (2,), (1,), (1,), 1, (1,)), (2, 6, (7,), 6, (4,), (1,), (0,), (1,), 6, (0,)),
        (1, 4, (9,), 6, (3,), (3,), (1,), (2,), 2, (2,)), (1, 3, (4,), 2, (5,), (2,), (3,), (1,), 1, (0,)),
        (1, 5, (6,), 4, (1,), (2,), (0,), (1,), 1, (1,)), (1, 2, (33,), 3, (2,), (1,), (0,), (3,), 1, (2,)),
        (1, 8, (3,), 8, (3,), (4,), (2,), (1,), 4, (3,)),
    ]
    transposed_sweep_and_save("conv_transpose1d", rng, geoms, 30)


def gen_conv_transpose3d():
    rng = np.random.default_rng(912)
    # N, C, (D, H, W), O, (kD, kH, kW), stride, padding, dilation, groups, output_padding
    geoms = [
        (1, 4, (2, 3, 3), 3, (2, 3, 3), (2, 2, 2), (0, 1, 1), (1, 1, 1), 1, (1, 1, 0)),
        (1, 6, (2, 2, 3), 6, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 6, (0, 0, 0)),
        (2, 4, (3, 2, 2), 4, (2, 2, 2), (1, 2, 1), (0, 0, 1), (1, 1, 2), 2, (0, 1, 1)),
        (1, 2, (2, 3, 2), 3, (1, 2, 3), (2, 1, 3), (0, 1, 2), (1, 1, 1), 1, (1, 0, 2)),
        (1, 3, (3, 3, 3), 2, (3, 3, 3), (1, 1, 1), (2, 2, 2), (1, 1, 1), 1, (0, 0, 0)),
        (1, 5, (2, 2, 2), 4, (1, 1, 1), (3, 2, 2), (0, 0, 0), (1, 1, 1), 1, (2, 1, 0)),
        (1, 4, (4, 3, 3), 4, (2, 2, 2), (3, 2, 2), (2, 1, 1), (1, 1, 1), 2, (1, 0, 1)),   # padding > dilation*(k-1): crops
    ]
    transposed_sweep_and_save("conv_transpose3d", rng, geoms, 24)


# ------------------------------------------------------------------ batch norm 1d / 3d
def bn_model_nd(x, xz, alpha, beta, oz, relu):
    C = x.shape[1]
    shp = (1, C) + (1,) * (x.ndim - 2)
    d = (x.astype(np.int64) - xz).astype(f32)
    A = np.broadcast_to(alpha.reshape(shp), x.shape)
    B = np.broadcast_to(beta.reshape(shp), x.shape)
    y = np.rint(fma_or_not(A, d, B, True)).astype(np.float64) + oz
    return np.clip(y, oz if relu else 0, 255).astype(np.uint8)


def gen_batch_norm_nd():
    rng = np.random.default_rng(913)
    shapes = {"batch_norm1d": [(4, 12), (2, 3, 9), (1, 32, 3), (3, 40), (2, 8, 5), (1, 64, 2), (5, 1, 7), (2, 17)],
              "batch_norm3d": [(1, 12, 2, 2, 3), (2, 3, 2, 3, 4), (1, 32, 2, 2, 2), (1, 40, 1, 2, 2), (2, 8, 3, 1, 2),
                               (1, 64, 1, 2, 3), (1, 1, 3, 3, 3), (2, 17, 2, 1, 2)]}
    for op in ("batch_norm1d", "batch_norm1d_relu", "batch_norm3d", "batch_norm3d_relu"):
        relu = op.endswith("relu")
        for i, shape in enumerate(shapes[op.replace("_relu", "")][: 6 if relu else 8]):
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
            x = u8(rng, shape)
            alpha, beta = bn_coefficients(w, b, m, v, eps, xs, os_)
            f = getattr(torch.ops.quantized, op)
            y = f(tq(x, xs, xz), torch.from_numpy(w), torch.from_numpy(b), torch.from_numpy(m), torch.from_numpy(v), eps, os_,
                  oz).int_repr().numpy()
            assert (y == bn_model_nd(x, xz, alpha, beta, oz, relu)).all(), (op, shape)
            attrs = {"scale": xs, "zero_point": xz, "out_scale": os_, "out_zero_point": oz}
            if eps != 1e-5 or i % 2:
                attrs["eps"] = eps
            save_case(op, "case%d_%s" % (i, shape_name(shape)), {"x": x, "weight": w, "bias": b, "mean": m, "var": v}, {"y": y}, attrs,
                      common.TORCH_SRC + "; equal to the model with fused multiply-adds (ATen's AVX2/AVX-512 builds)")


# ------------------------------------------------------------------ embedding_bag_2bit
def unpack_2bit(packed, D):
    p = packed.numpy()
    q = D // 4
    by = p[:, :q]
    codes = np.empty((p.shape[0], D), np.uint8)
    for k in range(4):
        codes[:, k::4] = (by >> (2 * k)) & 3
    sb = np.ascontiguousarray(p[:, q:q + 4]).view(np.float16)
    return codes, sb[:, 0].copy(), sb[:, 1].copy()


def gen_embedding_bag_2bit():
    rng = np.random.default_rng(914)
    cases = [(5, 4, [2, 0, 3]), (10, 8, [3, 1, 4, 0]), (20, 16, [5, 5]), (7, 36, [2, 3, 0, 1]), (30, 64, [10, 7, 1]),
             (12, 68, [4, 4, 4]), (6, 4, [3, 2]), (50, 128, [8, 0, 16])]
    for i, (R, D, lengths) in enumerate(cases):
        w = (rng.standard_normal((R, D)) * [0.1, 1.0, 3.0][i % 3]).astype(f32)
        if i % 4 == 3:
            w[0] = 0.0   # a constant row (scale 0)
        packed = torch.ops.quantized.embedding_bag_2bit_prepack(torch.from_numpy(w))
        codes, scales, biases = unpack_2bit(packed, D)
        n = sum(lengths)
        indices = rng.integers(0, R, n).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        last = bool(i % 2)
        offsets = np.concatenate([starts, [n]]).astype(np.int64) if last else starts
        psw = rng.standard_normal(n).astype(f32) if i % 3 == 1 else None
        y = torch.ops.quantized.embedding_bag_2bit_rowwise_offsets(packed, torch.from_numpy(indices), torch.from_numpy(offsets), False, 0,
                                                                   False, None if psw is None else torch.from_numpy(psw), None, last).numpy()
        model = bag_model(codes, scales, biases, indices, list(starts) + [n], psw)
        assert common.bits_equal(y, model), ("embedding_bag_2bit", R, D, lengths)
        ins = {"weight": codes, "weight_scales": scales, "weight_biases": biases, "indices": indices, "offsets": offsets}
        if psw is not None:
            ins["per_sample_weights"] = psw
        attrs = {"include_last_offset": last}
        if i % 2 == 0:
            attrs["mode"] = "sum"
        save_case("embedding_bag_2bit", "case%d_r%dd%d_b%d%s%s" % (i, R, D, len(lengths), "_psw" if psw is not None else "",
                                                                 "_last" if last else ""),
                  ins, {"y": y}, attrs, common.TORCH_SRC + "; weights from embedding_bag_2bit_prepack of float rows")


def generate():
    gen_scalar_ops()
    gen_cat_relu()
    gen_prelu()
    gen_celu()
    gen_threshold()
    gen_clamp()
    gen_max_pool1d()
    gen_max_pool3d()
    gen_avg_pool3d()
    gen_adaptive_avg_pool3d()
    gen_conv_transpose1d()
    gen_conv_transpose3d()
    gen_batch_norm_nd()
    gen_embedding_bag_2bit()
    print("transposed conv stats:", {k: v for k, v in sorted(STATS.items()) if k.startswith("conv_transpose") and k[14] in "13"})
