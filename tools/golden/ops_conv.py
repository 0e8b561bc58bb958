"""conv1d / conv3d / conv_transpose2d / matmul / embedding_bag_byte / embedding_bag_4bit cases.

The convolutions follow ops_gemm.py: an exact model (exact int32 accumulation,
fbgemm requantization) validated bit for bit against torch (engine fbgemm,
AVX2 kernels) wherever torch is exact (7-bit activations without zero-point
padding >= 128, or |w| <= 64); outside that regime torch's vpmaddubsw saturates
and the cases store the model's output. matmul and the embedding bags are
torch's output, asserted equal to the model."""
import numpy as np
import torch

import common
from common import f32, save_case, fma_f32
from ops_gemm import MODEL_SRC, make_weights, make_x, pick_out_scale, rand_scale, requant_static, tq_w, tq_x

STATS = {}
CONV_SRC = "; conv via the fbgemm engine (what x86 uses on a CPU without VNNI); equal to the exact model"


def shape_name(shape):
    return "x".join(map(str, shape))


def out_len(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def convnd_acc(x, xz, w, wz, st, pad, dil, g):
    """Exact accumulator of an N-d convolution (x: [N, C, *sp], w: [O, C/g, *k]); padding holds xz."""
    nd = x.ndim - 2
    sp, ks = x.shape[2:], w.shape[2:]
    N, C = x.shape[:2]
    O, Cg = w.shape[:2]
    xp = np.full((N, C) + tuple(sp[i] + 2 * pad[i] for i in range(nd)), xz, np.int64)
    xp[(slice(None), slice(None)) + tuple(slice(pad[i], pad[i] + sp[i]) for i in range(nd))] = x
    xp -= xz
    osz = [out_len(sp[i], ks[i], st[i], pad[i], dil[i]) for i in range(nd)]
    wz = np.broadcast_to(np.asarray(wz, np.int64).reshape(-1), (O,))
    wi = w.astype(np.int64) - wz.reshape((O,) + (1,) * (nd + 1))
    out = np.zeros((N, O) + tuple(osz), np.int64)
    Og = O // g
    for gi in range(g):
        for kidx in np.ndindex(*ks):
            sl = tuple(slice(kidx[i] * dil[i], kidx[i] * dil[i] + st[i] * (osz[i] - 1) + 1, st[i]) for i in range(nd))
            patch = xp[(slice(None), slice(gi * Cg, (gi + 1) * Cg)) + sl]
            wk = wi[(slice(gi * Og, (gi + 1) * Og), slice(None)) + kidx]
            out[:, gi * Og:(gi + 1) * Og] += np.einsum("nc...,oc->no...", patch, wk)
    return out


def conv_transpose2d_acc(x, xz, w, wz, st, pad, opad, dil, g):
    """Exact accumulator of a transposed conv2d (x: [N, C, H, W], w: [C, O/g, kH, kW]), by scattering."""
    N, C, H, W = x.shape
    _, Og, KH, KW = w.shape
    OH = (H - 1) * st[0] - 2 * pad[0] + dil[0] * (KH - 1) + opad[0] + 1
    OW = (W - 1) * st[1] - 2 * pad[1] + dil[1] * (KW - 1) + opad[1] + 1
    Cg = C // g
    xi = x.astype(np.int64) - xz
    wi = w.astype(np.int64) - int(np.asarray(wz).reshape(-1)[0])
    out = np.zeros((N, Og * g, OH, OW), np.int64)
    for gi in range(g):
        for kh in range(KH):
            for kw in range(KW):
                contrib = np.einsum("nchw,co->nohw", xi[:, gi * Cg:(gi + 1) * Cg], wi[gi * Cg:(gi + 1) * Cg, :, kh, kw])
                for iy in range(H):
                    oy = iy * st[0] - pad[0] + kh * dil[0]
                    if not 0 <= oy < OH:
                        continue
                    for ix in range(W):
                        ox = ix * st[1] - pad[1] + kw * dil[1]
                        if 0 <= ox < OW:
                            out[:, gi * Og:(gi + 1) * Og, oy, ox] += contrib[:, :, iy, ix]
    return out


def run_torch(kind, x, xs, xz, w, ws, wz, pc, bias, p, out_s, out_zp, relu):
    torch.backends.quantized.engine = "fbgemm"
    try:
        b = None if bias is None else torch.from_numpy(bias)
        qw = tq_w(w, ws, wz, pc)
        if kind == "conv1d":
            pk = torch.ops.quantized.conv1d_prepack(qw, b, p["stride"], p["padding"], p["dilation"], p["groups"])
            f = torch.ops.quantized.conv1d_relu if relu else torch.ops.quantized.conv1d
        elif kind == "conv3d":
            pk = torch.ops.quantized.conv3d_prepack(qw, b, p["stride"], p["padding"], p["dilation"], p["groups"])
            f = torch.ops.quantized.conv3d_relu if relu else torch.ops.quantized.conv3d
        else:
            pk = torch.ops.quantized.conv_transpose2d_prepack(qw, b, p["stride"], p["padding"], p["output_padding"], p["dilation"],
                                                              p["groups"])
            f = torch.ops.quantized.conv_transpose2d
        return f(tq_x(x, xs, xz), pk, out_s, out_zp).int_repr().numpy()
    finally:
        torch.backends.quantized.engine = "x86"


def conv_case(rng, kind, geom, pc, has_bias, relu, xz, xmode, wmode, wz_mode, omode, save=None):
    N, C, sp, O, ks, st, pad, dil, g = geom[:9]
    opad = geom[9] if kind == "conv_transpose2d" else None
    x = make_x(rng, (N, C) + tuple(sp), xmode, xz)
    wshape = ((C, O // g) if kind == "conv_transpose2d" else (O, C // g)) + tuple(ks)
    w = make_weights(rng, wshape, wmode)
    Cn = O if pc else 1
    ws = np.array([rand_scale(rng) * 0.1 for _ in range(Cn)], np.float64)
    wz = np.zeros(Cn, np.int64) if wz_mode == "zero" else rng.integers(-10, 11, Cn).astype(np.int64)
    xs = rand_scale(rng)
    if kind == "conv_transpose2d":
        acc = conv_transpose2d_acc(x, xz, w, wz, st, pad, opad, dil, g)
    else:
        acc = convnd_acc(x, xz, w, wz, st, pad, dil, g)
    atws = (f32(xs) * ws.astype(f32)).astype(f32)
    out_s = pick_out_scale(rng, acc, float(atws.max()), omode)
    out_zp = int(rng.integers(0, 256)) if omode == "normal" else int(rng.choice([0, 255, 128]))
    bias = (rng.standard_normal(O) * float(np.abs(acc).mean() + 1) * float(atws.max())).astype(f32) if has_bias else None
    y = np.ascontiguousarray(np.moveaxis(requant_static(np.moveaxis(acc, 1, -1), xs, ws, bias, out_s, out_zp, relu, pc), -1, 1))
    p = {"stride": list(st), "padding": list(pad), "dilation": list(dil), "groups": g}
    if opad is not None:
        p["output_padding"] = list(opad)
    wmax = int(np.abs(w.astype(np.int32)).max())
    padded = any(v > 0 for v in pad) or kind == "conv_transpose2d"
    exact = (wmax <= 64) or (xmode == "7bit" and not (xz >= 128 and padded))
    yt = run_torch(kind, x, xs, xz, w, ws, wz, pc, bias, p, out_s, out_zp, relu)
    src = MODEL_SRC
    if exact:
        assert common.bits_equal(yt, y), ("%s model disagrees with torch" % kind, geom, pc, xz, xmode, wmode)
        src = common.TORCH_SRC + CONV_SRC
        STATS[kind + "_validated"] = STATS.get(kind + "_validated", 0) + 1
    else:
        STATS[kind + "_full"] = STATS.get(kind + "_full", 0) + 1
        STATS[kind + "_full_diff"] = STATS.get(kind + "_full_diff", 0) + int(not common.bits_equal(yt, y))
    if save:
        attrs = {"x_scale": xs, "x_zero_point": xz, "out_scale": out_s, "out_zero_point": out_zp}
        attrs.update(p)
        if kind != "conv_transpose2d":
            attrs["relu"] = relu
        if (pc and O == 1) or kind == "conv_transpose2d" or save.endswith("0"):
            attrs["w_qscheme"] = "per_channel" if pc else "per_tensor"
        ins = {"x": x, "w": w, "w_scales": ws, "w_zero_points": wz}
        if bias is not None:
            ins["bias"] = bias
        save_case(kind, save, ins, {"y": y}, attrs, src)


def sweep_and_save(kind, rng, geoms, nsweep, allow_pc=True):
    for i in range(nsweep):
        gm = geoms[i % len(geoms)]
        conv_case(rng, kind, gm, allow_pc and bool(i % 2), bool(i % 3), kind != "conv_transpose2d" and i % 5 == 0,
                  int(rng.choice([0, 37, 128, 255])), "7bit" if i % 3 else "full", "full" if i % 3 else "small",
                  "nz" if i % 4 == 1 else "zero", "normal" if i % 6 else "tiny")
    idx = 0
    for gm in geoms:
        for v in range(3):
            pc = allow_pc and bool(v % 2)
            xz = [0, 128, 255, 31][(idx + v) % 4]
            xmode = "7bit" if v == 0 else "full"
            wmode = "small" if (idx % 5 == 4) else "full"
            has_bias = (idx % 4) != 2
            relu = kind != "conv_transpose2d" and (idx % 3) == 1
            omode = ["normal", "normal", "tiny", "normal", "huge"][idx % 5]
            wz_mode = "nz" if idx % 5 == 3 else "zero"
            N, C, sp, O, ks, st, pad, dil, g = gm[:9]
            name = "n%dc%d_%s_o%d_k%s_s%s_p%s_d%s_g%d%s_%s_%s%s_xzp%d_%s_%s_%03d" % (
                N, C, shape_name(sp), O, shape_name(ks), shape_name(st), shape_name(pad), shape_name(dil), g,
                ("_op" + shape_name(gm[9])) if kind == "conv_transpose2d" else "", "pc" if pc else "pt",
                "bias" if has_bias else "nobias", "_relu" if relu else "", xz, xmode, omode, idx)
            conv_case(rng, kind, gm, pc, has_bias, relu, xz, xmode, wmode, wz_mode, omode, save=name)
            idx += 1


def gen_conv1d():
    rng = np.random.default_rng(701)
    # N, C, (L,), O, (k,), stride, padding, dilation, groups
    geoms = [
        (1, 16, (6,), 16, (3,), (1,), (1,), (1,), 16), (1, 3, (9,), 4, (3,), (1,), (0,), (1,), 1), (2, 4, (17,), 6, (5,), (2,), (2,), (1,), 2),
        (1, 5, (11,), 7, (2,), (3,), (1,), (2,), 1), (1, 8, (7,), 4, (1,), (1,), (0,), (1,), 1), (2, 6, (33,), 6, (3,), (1,), (2,), (2,), 3),
        (1, 1, (8,), 1, (4,), (1,), (1,), (1,), 1),
    ]
    sweep_and_save("conv1d", rng, geoms, 60)


def gen_conv3d():
    rng = np.random.default_rng(702)
    # N, C, (D, H, W), O, (kD, kH, kW), stride, padding, dilation, groups
    geoms = [
        (1, 8, (2, 3, 3), 8, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1),
        (1, 3, (4, 5, 5), 4, (2, 3, 3), (1, 1, 1), (0, 1, 1), (1, 1, 1), 1),
        (2, 4, (5, 4, 6), 6, (3, 2, 3), (2, 1, 2), (1, 0, 1), (1, 1, 1), 2),
        (1, 6, (3, 5, 5), 6, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 6),   # depthwise
        (1, 4, (6, 6, 6), 2, (2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1), 1),
        (1, 2, (5, 7, 4), 3, (2, 3, 2), (1, 2, 1), (1, 1, 0), (2, 1, 1), 1),
        (1, 4, (3, 3, 3), 8, (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), 1),   # 1x1x1
    ]
    sweep_and_save("conv3d", rng, geoms, 40)


def gen_conv_transpose2d():
    rng = np.random.default_rng(703)
    # N, C, (H, W), O, (kH, kW), stride, padding, dilation, groups, output_padding
    geoms = [
        (1, 6, (2, 3), 3, (3, 3), (3, 3), (1, 1), (1, 1), 3, (2, 2)),
        (1, 4, (3, 3), 5, (3, 3), (2, 2), (1, 1), (1, 1), 1, (1, 1)),
        (2, 3, (4, 5), 2, (2, 2), (2, 2), (0, 0), (1, 1), 1, (0, 0)),
        (1, 8, (3, 4), 8, (4, 4), (2, 2), (1, 1), (1, 1), 8, (0, 0)),
        (1, 4, (5, 3), 6, (3, 2), (1, 2), (2, 0), (1, 1), 2, (0, 1)),
        (1, 2, (3, 3), 3, (3, 3), (1, 1), (0, 0), (2, 2), 1, (1, 0)),
        (1, 5, (2, 2), 4, (1, 1), (2, 3), (0, 0), (1, 1), 1, (1, 2)),
        (1, 3, (4, 4), 3, (5, 5), (1, 1), (3, 3), (1, 1), 1, (0, 0)),
        (1, 4, (6, 5), 4, (2, 2), (3, 2), (2, 1), (1, 1), 2, (1, 0)),   # padding > dilation*(k-1): crops
    ]
    sweep_and_save("conv_transpose2d", rng, geoms, 40, allow_pc=False)


# ------------------------------------------------------------------ matmul
def gen_matmul():
    rng = np.random.default_rng(704)
    cases = [((4, 64), (64, 3)), ((1, 1), (1, 1)), ((5, 17), (17, 9)), ((2, 3, 4, 5), (5, 6)), ((3, 7, 8), (3, 8, 2)),
             ((2, 1, 6, 33), (4, 33, 5)), ((8, 200), (200, 16)), ((3, 65), (65, 1))]
    for dt in ("quint8", "qint8"):
        lo, hi = (0, 256) if dt == "quint8" else (-128, 128)
        npdt = np.uint8 if dt == "quint8" else np.int8
        tdt = torch.quint8 if dt == "quint8" else torch.qint8
        for i, (sa_, sb_) in enumerate(cases):
            a = rng.integers(lo, hi, sa_).astype(npdt)
            b = rng.integers(lo, hi, sb_).astype(npdt)
            sa = [8.0, 0.5, 2.0 ** -3, 1.0][i % 4]
            sb = [2.0 ** -9, 0.125, 4.0, 2.0 ** -5][i % 4]
            za, zb = (int(v) for v in rng.integers(lo, hi, 2))
            if i % 3 == 0:
                za, zb = (lo, hi - 1)
            ea = torch._make_per_tensor_quantized_tensor(torch.from_numpy(a), sa, za)
            eb = torch._make_per_tensor_quantized_tensor(torch.from_numpy(b), sb, zb)
            acc = np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb)
            assert np.abs(acc).max() * 1 < 2 ** 24 and sa_[-1] * 255 * 255 < 2 ** 24
            r = (acc.astype(np.float64) * (sa * sb)).astype(f32)
            span = float(np.abs(r).max()) + 1e-3
            so = [span / 100.0, float(f32(span / 37.0)), span / 250.0, span * 2][i % 4]
            zo = int(rng.integers(lo, hi)) if i % 2 else [lo, hi - 1][i % 4 // 2]
            y = torch.ops.quantized.matmul(ea, eb, so, zo)
            assert y.dtype == tdt
            y = y.int_repr().numpy()
            inv = f32(1.0) / f32(so)
            model = np.clip(np.rint((r * inv).astype(f32)) + zo, lo, hi - 1).astype(npdt)
            assert y.shape == model.shape and (y == model).all(), ("matmul", dt, sa_, sb_)
            save_case("matmul", "%s_case%d_a%s_b%s" % (dt, i, shape_name(sa_), shape_name(sb_)), {"a": a, "b": b}, {"y": y},
                      {"a_scale": sa, "a_zero_point": za, "b_scale": sb, "b_zero_point": zb, "out_scale": so, "out_zero_point": zo},
                      common.TORCH_SRC + "; power-of-two input scales and |sum| < 2^24 units: the float matmul is exact in any order")


# ------------------------------------------------------------------ embedding bags
def unpack_byte(packed, D):
    p = packed.numpy()
    codes = p[:, :D].copy()
    tail = np.ascontiguousarray(p[:, D:D + 8])
    sb = tail.view(np.float32)
    return codes, sb[:, 0].copy(), sb[:, 1].copy()


def unpack_4bit(packed, D):
    p = packed.numpy()
    half = D // 2
    by = p[:, :half]
    codes = np.empty((p.shape[0], D), np.uint8)
    codes[:, 0::2] = by & 15
    codes[:, 1::2] = by >> 4
    tail = np.ascontiguousarray(p[:, half:half + 4])
    sb = tail.view(np.float16)
    return codes, sb[:, 0].copy(), sb[:, 1].copy()


def bag_model(codes, scales, biases, indices, bounds, psw):
    D = codes.shape[1]
    out = np.zeros((len(bounds) - 1, D), f32)
    sc = scales.astype(f32)
    bi = biases.astype(f32)
    for b in range(len(bounds) - 1):
        acc = np.zeros(D, f32)
        for p in range(bounds[b], bounds[b + 1]):
            r = indices[p]
            w = f32(1.0) if psw is None else f32(psw[p])
            s = f32(w * sc[r])
            t = f32(w * bi[r])
            acc = fma_f32(np.full(D, s), codes[r].astype(f32), (acc + t).astype(f32))
        out[b] = acc
    return out


def gen_embedding_bags():
    rng = np.random.default_rng(705)
    cases = [(5, 2, [2, 0, 3]), (10, 8, [3, 1, 4, 0]), (20, 16, [5, 5]), (7, 33, [2, 3, 0, 1]), (30, 64, [10, 7, 1]),
             (12, 65, [4, 4, 4]), (6, 1, [3, 2]), (50, 128, [8, 0, 16])]
    for bits in (8, 4):
        op = "embedding_bag_byte" if bits == 8 else "embedding_bag_4bit"
        for i, (R, D, lengths) in enumerate(cases):
            if bits == 4 and D % 2:
                D += 1
            w = (rng.standard_normal((R, D)) * [0.1, 1.0, 3.0][i % 3]).astype(f32)
            if i % 4 == 3:
                w[0] = 0.0   # a constant row (scale 0)
            wt = torch.from_numpy(w)
            if bits == 8:
                packed = torch.ops.quantized.embedding_bag_byte_prepack(wt)
                codes, scales, biases = unpack_byte(packed, D)
            else:
                packed = torch.ops.quantized.embedding_bag_4bit_prepack(wt)
                codes, scales, biases = unpack_4bit(packed, D)
            n = sum(lengths)
            indices = rng.integers(0, R, n).astype(np.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            last = bool(i % 2)
            offsets = np.concatenate([starts, [n]]).astype(np.int64) if last else starts
            psw = (rng.standard_normal(n).astype(f32)) if i % 3 == 1 else None
            fn = torch.ops.quantized.embedding_bag_byte_rowwise_offsets if bits == 8 else torch.ops.quantized.embedding_bag_4bit_rowwise_offsets
            y = fn(packed, torch.from_numpy(indices), torch.from_numpy(offsets), False, 0, False,
                   None if psw is None else torch.from_numpy(psw), None, last).numpy()
            bounds = list(starts) + [n]
            model = bag_model(codes, scales, biases, indices, bounds, psw)
            assert common.bits_equal(y, model), (op, R, D, lengths)
            ins = {"weight": codes, "weight_scales": scales, "weight_biases": biases, "indices": indices, "offsets": offsets}
            if psw is not None:
                ins["per_sample_weights"] = psw
            attrs = {"include_last_offset": last}
            if i % 2 == 0:
                attrs["mode"] = "sum"
            save_case(op, "case%d_r%dd%d_b%d%s%s" % (i, R, D, len(lengths), "_psw" if psw is not None else "", "_last" if last else ""),
                      ins, {"y": y}, attrs,
                      common.TORCH_SRC + "; weights from %s_prepack of float rows" % ("embedding_bag_byte" if bits == 8 else "embedding_bag_4bit"))


def generate():
    gen_conv1d()
    gen_conv3d()
    gen_conv_transpose2d()
    gen_matmul()
    gen_embedding_bags()
    print("conv stats:", STATS)
