"""add / add_relu / mul / relu / hardswish / sigmoid / pooling / cat cases (outputs from torch,
each checked against a NumPy model of the formula; see README.md)."""
import numpy as np
import torch
import torch.nn.functional as F

import common
from common import f32, save_case

SRC_PATHS = "; inputs chosen so the FMA-vector and scalar dequantize paths agree"


def tq(q, s, z):
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(q)), s, z)


def fscale(rng, lo=-3, hi=-0.5):
    return float(f32(10.0 ** rng.uniform(lo, hi)))


def q_scalar(v, s, z):
    """quantize_val: zp + rne(v * (1.0f/(float)s)), clamp to quint8."""
    inv = f32(1.0) / f32(s)
    return np.clip(np.rint((v * inv).astype(f32)) + z, 0, 255).astype(np.int64)


def q_vector(v, s, z):
    """Vectorized quantize with inv = (float)(1.0/(double)s)."""
    inv = f32(1.0 / s)
    return np.clip(np.rint((v * inv).astype(f32)) + z, 0, 255).astype(np.int64)


def deq_exact(q, s, z):
    return ((q.astype(np.int64) - z).astype(f32) * f32(s)).astype(f32)


def deq_fma(q, s, z):
    premul = f32(f32(-z) * f32(s))
    return common.fma_f32(np.full(q.shape, f32(s)), q.astype(f32), np.full(q.shape, premul))


# ------------------------------------------------------------------ add / add_relu
def add_models(a, b, sa, za, sb, zb, so, zo, relu):
    ys = (deq_exact(a, sa, za) + deq_exact(b, sb, zb)).astype(f32)
    yv = (deq_fma(a, sa, za) + deq_fma(b, sb, zb)).astype(f32)
    if relu:
        ys = np.maximum(ys, f32(0))
        yv = np.maximum(yv, f32(0))
    return q_scalar(ys, so, zo), q_vector(yv, so, zo)


def gen_add():
    rng = np.random.default_rng(301)
    sizes = [(1,), (7,), (31,), (64,), (65,), (100,), (130,), (3, 50), (2, 3, 4, 5), (1, 8, 4, 4)]
    for op in ("add", "add_relu"):
        for i in range(16):
            shape = sizes[i % len(sizes)]
            same = i % 4 == 0
            sa = fscale(rng)
            sb = sa if same else fscale(rng)
            so = sa if same else fscale(rng, -2.5, -0.3)
            za, zb, zo = (int(v) for v in rng.integers(0, 256, 3))
            if i % 5 == 1:
                za, zb, zo = 0, 255, 128
            n = int(np.prod(shape))
            a = np.empty(n, np.uint8)
            b = np.empty(n, np.uint8)
            for k in range(n):
                for _ in range(1000):
                    ca, cb = rng.integers(0, 256, 2)
                    ys, yv = add_models(np.array([ca]), np.array([cb]), sa, za, sb, zb, so, zo, op == "add_relu")
                    if ys[0] == yv[0]:
                        break
                else:
                    raise RuntimeError("no agreeing input")
                a[k], b[k] = ca, cb
            a = a.reshape(shape)
            b = b.reshape(shape)
            f = torch.ops.quantized.add_relu if op == "add_relu" else torch.ops.quantized.add
            y = f(tq(a, sa, za), tq(b, sb, zb), so, zo).int_repr().numpy()
            ys, _ = add_models(a, b, sa, za, sb, zb, so, zo, op == "add_relu")
            assert (ys == y).all(), op
            attrs = {"a_scale": sa, "a_zero_point": za, "b_scale": sb, "b_zero_point": zb, "out_scale": so, "out_zero_point": zo}
            save_case(op, "case%02d_%s" % (i, "x".join(map(str, shape))), {"a": a, "b": b}, {"y": y}, attrs, common.TORCH_SRC + SRC_PATHS)


def gen_mul():
    rng = np.random.default_rng(302)
    sizes = [(1,), (7,), (64,), (65,), (130,), (3, 50), (2, 3, 4, 5)]
    for i in range(18):
        shape = sizes[i % len(sizes)]
        if i % 3 == 0:
            sa, sb, so = 0.0625, 0.125, 0.25
        elif i % 3 == 1:
            sa, sb, so = (float(v) for v in 10.0 ** rng.uniform(-2.5, -0.5, 3))  # not float32-representable
        else:
            sa, sb, so = fscale(rng), fscale(rng), fscale(rng, -2, 0)
        za, zb, zo = (int(v) for v in rng.integers(0, 256, 3))
        if i % 4 == 1:
            za, zb, zo = 255, 0, 0
        a = rng.integers(0, 256, shape).astype(np.uint8)
        b = rng.integers(0, 256, shape).astype(np.uint8)
        y = torch.ops.quantized.mul(tq(a, sa, za), tq(b, sb, zb), so, zo).int_repr().numpy()
        c = (a.astype(np.int64) - za) * (b.astype(np.int64) - zb)
        m = f32(sa * sb * (1.0 / so))
        ym = np.clip(zo + np.rint((c.astype(f32) * m).astype(f32)), 0, 255)
        assert (ym == y).all(), "mul formula"
        attrs = {"a_scale": sa, "a_zero_point": za, "b_scale": sb, "b_zero_point": zb, "out_scale": so, "out_zero_point": zo}
        save_case("mul", "case%02d_%s" % (i, "x".join(map(str, shape))), {"a": a, "b": b}, {"y": y}, attrs, common.TORCH_SRC)


def gen_relu():
    rng = np.random.default_rng(303)
    for i, zp in enumerate((0, 1, 127, 128, 200, 255, 64, 3)):
        shape = [(7,), (65,), (2, 3, 4, 5), (130,)][i % 4]
        s = [0.05469585955142975, 0.1, 0.0473, 1.0][i % 4]
        x = rng.integers(0, 256, shape).astype(np.uint8)
        y = torch.relu(tq(x, s, zp)).int_repr().numpy()
        assert (y == np.maximum(x, zp)).all()
        save_case("relu", "case%d_zp%d_%s" % (i, zp, "x".join(map(str, shape))), {"x": x}, {"y": y}, {"scale": s, "zero_point": zp}, common.TORCH_SRC)


def hs_models(q, s, z, so, zo):
    out = []
    for x, qf in ((deq_exact(q, s, z), q_scalar), (deq_fma(q, s, z), q_vector)):
        t = np.minimum(np.maximum((x + f32(3)).astype(f32), f32(0)), f32(6))
        y = ((x * t).astype(f32) / f32(6)).astype(f32)
        out.append(qf(y, so, zo))
    return out


def gen_hardswish():
    rng = np.random.default_rng(304)
    sizes = [(7,), (64,), (65,), (130,), (2, 3, 4, 5), (256,)]
    for i in range(14):
        shape = sizes[i % len(sizes)]
        s = [0.05, 0.03, fscale(rng, -2, -0.5), 0.1][i % 4]
        s = float(f32(s))
        z = [128, 0, 255, int(rng.integers(0, 256))][(i // 2) % 4]
        so = float(f32([0.03, fscale(rng, -2, -0.5), 0.05][i % 3]))
        zo = int([10, 0, rng.integers(0, 256)][i % 3])
        allq = np.arange(256)
        ys, yv = hs_models(allq, s, z, so, zo)
        ok = allq[ys == yv]
        x = rng.choice(ok, int(np.prod(shape))).astype(np.uint8).reshape(shape)
        y = torch.ops.quantized.hardswish(tq(x, s, z), so, zo).int_repr().numpy()
        assert (y == hs_models(x, s, z, so, zo)[0]).all(), "hardswish"
        save_case("hardswish", "case%02d_%s" % (i, "x".join(map(str, shape))), {"x": x}, {"y": y},
                  {"scale": s, "zero_point": z, "out_scale": so, "out_zero_point": zo}, common.TORCH_SRC + SRC_PATHS)


def gen_sigmoid():
    rng = np.random.default_rng(305)
    sizes = [(7,), (64,), (65,), (130,), (2, 3, 4, 5)]
    for i in range(14):
        shape = sizes[i % len(sizes)]
        s = [0.05, 0.1, 10.0 ** rng.uniform(-2.5, -0.7), 0.0473][i % 4]
        z = [128, 0, 255, int(rng.integers(0, 256))][(i // 2) % 4]
        so, zo = [(1.0 / 256, 0), (float(f32(1.0 / 255)), 0), (1.0 / 128, 0), (float(f32(0.005)), 3)][i % 4]
        allq = np.arange(256)
        xf = deq_exact(allq, s, z).astype(np.float64)
        sig = 1.0 / (1.0 + np.exp(-xf))
        t = sig * float(f32(1.0) / f32(so))
        dist = np.abs(t - (np.floor(t) + 0.5))
        ok = allq[dist >= 0.002]
        x = rng.choice(ok, int(np.prod(shape))).astype(np.uint8).reshape(shape)
        y = torch.ops.quantized.sigmoid(tq(x, s, z), so, zo).int_repr().numpy()
        tm = t[x.astype(np.int64)]
        assert (y == np.clip(np.rint(tm) + zo, 0, 255)).all(), "sigmoid"
        save_case("sigmoid", "case%02d_%s" % (i, "x".join(map(str, shape))), {"x": x}, {"y": y},
                  {"scale": s, "zero_point": z, "out_scale": so, "out_zero_point": zo},
                  common.TORCH_SRC + "; inputs chosen >=0.002 LSB away from rounding boundaries (exp implementation independent)")


# ------------------------------------------------------------------ pooling
def avg_model(x, k, st, p, ceil, cip, zp):
    xs = torch.from_numpy(x.astype(np.float64) - zp)
    S = F.avg_pool2d(xs, k, st, p, ceil, cip, divisor_override=1).numpy()
    ones = torch.ones(x.shape, dtype=torch.float64)
    cnt = F.avg_pool2d(ones, k, st, p, ceil, cip, divisor_override=1).numpy()
    div = np.rint(cnt / F.avg_pool2d(ones, k, st, p, ceil, cip).numpy())
    return np.clip(np.rint(S / div + zp), 0, 255)


def gen_pool():
    rng = np.random.default_rng(306)
    geoms = [((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1)), ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 1)),
             ((3, 2), (3, 2), (0, 1)), ((5, 5), (2, 2), (2, 2)), ((1, 1), (2, 2), (0, 0)), ((4, 4), (3, 3), (2, 1))]
    idx = 0
    for k, st, p in geoms:
        for variant in range(3):
            dil = [(1, 1), (2, 1), (2, 2)][variant]
            ceil = variant >= 1
            N, C, H, W = [(1, 2, 7, 7), (2, 3, 9, 8), (1, 4, 11, 6)][(idx) % 3]
            eh = dil[0] * (k[0] - 1) + 1
            ew = dil[1] * (k[1] - 1) + 1
            if H + 2 * p[0] < eh or W + 2 * p[1] < ew or p[0] * 2 > k[0] or p[1] * 2 > k[1]:
                idx += 1
                continue
            x = rng.integers(0, 256, (N, C, H, W)).astype(np.uint8)
            y = F.max_pool2d(tq(x, 0.1, 7), k, st, p, dil, ceil).int_repr().numpy()
            yr = F.max_pool2d(torch.from_numpy(x.astype(np.float32)), k, st, p, dil, ceil).numpy()
            assert (yr == y).all()
            save_case("max_pool2d", "case%02d_k%d%d_s%d%d_p%d%d_d%d%d_ceil%d" % (idx, k[0], k[1], st[0], st[1], p[0], p[1], dil[0], dil[1], ceil),
                      {"x": x}, {"y": y}, {"kernel_size": list(k), "stride": list(st), "padding": list(p), "dilation": list(dil), "ceil_mode": ceil},
                      common.TORCH_SRC)
            idx += 1
    idx = 0
    ageoms = geoms + [((3, 3), (3, 3), (1, 1)), ((2, 2), (1, 1), (1, 0)), ((3, 3), (2, 2), (0, 0))]
    for k, st, p in ageoms:
        for ceil in (False, True):
            for cip in (False, True):
                if (idx % 4 == 3) and not ceil:
                    idx += 1
                    continue
                N, C, H, W = [(1, 2, 7, 7), (2, 3, 9, 8), (1, 4, 11, 6), (1, 2, 6, 6)][idx % 4]
                if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
                    idx += 1
                    continue
                zp = [129, 0, 255, 7, 128, 33][idx % 6]
                s = [0.05, 0.1, 0.0473][idx % 3]
                x = rng.integers(0, 256, (N, C, H, W)).astype(np.uint8)
                y = F.avg_pool2d(tq(x, s, zp), k, st, p, ceil, cip).int_repr().numpy()
                assert (avg_model(x, k, st, p, ceil, cip, zp) == y).all(), "avg_pool2d NCHW formula"
                save_case("avg_pool2d", "case%02d_k%d%d_s%d%d_p%d%d_ceil%d_cip%d_zp%d" % (idx, k[0], k[1], st[0], st[1], p[0], p[1], ceil, cip, zp),
                          {"x": x}, {"y": y}, {"kernel_size": list(k), "stride": list(st), "padding": list(p), "ceil_mode": ceil,
                                               "count_include_pad": cip, "scale": s, "zero_point": zp},
                          common.TORCH_SRC + "; NCHW-contiguous input with C>1 and H*W>1 (the NCHW kernel)")
                idx += 1
    idx = 0
    for (H, W), (oh, ow) in (((6, 6), (3, 3)), ((7, 7), (3, 3)), ((5, 9), (2, 4)), ((10, 7), (3, 5)), ((4, 4), (4, 4)), ((6, 5), (1, 1)),
                             ((9, 9), (5, 5)), ((3, 11), (2, 7)), ((8, 8), (3, 6)), ((13, 5), (6, 2)), ((5, 5), (4, 3)), ((2, 3), (1, 2))):
        C = 2 + idx % 3
        zp = [14, 0, 255, 128, 77][idx % 5]
        s = 0.05
        x = rng.integers(0, 256, (1 + idx % 2, C, H, W)).astype(np.uint8)
        y = F.adaptive_avg_pool2d(tq(x, s, zp), (oh, ow)).int_repr().numpy()
        Sa = np.zeros(y.shape)
        n = np.zeros((oh, ow))
        for i in range(oh):
            h0, h1 = (i * H) // oh, -((-(i + 1) * H) // oh)
            for j in range(ow):
                w0, w1 = (j * W) // ow, -((-(j + 1) * W) // ow)
                Sa[:, :, i, j] = x[:, :, h0:h1, w0:w1].astype(np.int64).sum((2, 3))
                n[i, j] = (h1 - h0) * (w1 - w0)
        ym = np.rint((Sa.astype(f32) * (f32(1) / n.astype(f32))).astype(f32))
        assert (ym == y).all(), "adaptive_avg_pool2d formula"
        save_case("adaptive_avg_pool2d", "case%02d_%dx%dx%dx%d_to%dx%d" % (idx, x.shape[0], C, H, W, oh, ow), {"x": x}, {"y": y},
                  {"output_size": [oh, ow], "scale": s, "zero_point": zp}, common.TORCH_SRC + "; NCHW-contiguous input with C>1 and H*W>1 (the NCHW kernel)")
        idx += 1


def gen_cat():
    rng = np.random.default_rng(307)
    idx = 0
    for n in (2, 3, 4):
        for base, dim in (((2, 3, 4, 5), 1), ((2, 3, 4, 5), 0), ((2, 3, 4, 5), 3), ((2, 3, 4, 5), -1), ((2, 3, 4, 5), -3),
                          ((3, 5), 1), ((3, 5), -2), ((2, 4, 3), 2)):
            if (idx % 3 == 2) and n == 4:
                idx += 1
                continue
            xs, ss, zs = [], [], []
            for i in range(n):
                shp = list(base)
                shp[dim] = int(rng.integers(1, 4))
                xs.append(rng.integers(0, 256, shp).astype(np.uint8))
                same = (idx % 4 == 0) and i > 0
                ss.append(ss[0] if same else float(10.0 ** rng.uniform(-2, -0.5)))
                zs.append(zs[0] if same else int(rng.integers(0, 256)))
            if idx % 4 == 0:
                so, zo = ss[0], zs[0]
            else:
                so, zo = float(10.0 ** rng.uniform(-2, -0.3)), int(rng.integers(0, 256))
            if len(base) == 4 and (dim % 4) == 1:
                assert any(not (x.shape[1] == 1 or x.shape[2] * x.shape[3] == 1) for x in xs)
            y = torch.ops.quantized.cat([tq(x, s, z) for x, s, z in zip(xs, ss, zs)], dim, so, zo).int_repr().numpy()
            ym = np.concatenate([np.clip(np.rint((deq_exact(x, s, z) * (f32(1) / f32(so))).astype(f32)) + zo, 0, 255) for x, s, z in zip(xs, ss, zs)], axis=dim)
            assert (ym == y).all(), "cat formula"
            ins = {"x%d" % i: x for i, x in enumerate(xs)}
            save_case("cat", "case%02d_n%d_%dd_dim%d" % (idx, n, len(base), dim), ins, {"y": y},
                      {"dim": dim, "scales": ss, "zero_points": zs, "out_scale": so, "out_zero_point": zo}, common.TORCH_SRC)
            idx += 1


def generate():
    gen_add()
    gen_mul()
    gen_relu()
    gen_hardswish()
    gen_sigmoid()
    gen_pool()
    gen_cat()
