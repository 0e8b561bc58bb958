"""linear / conv2d / linear_dynamic / linear_dynamic_fp16 cases.

torch's AVX2 kernels (vpmaddubsw) saturate int16 for full-range activations, so
every case is computed by an exact NumPy model (exact int32 accumulation +
fbgemm requantization).  The model is first validated bit for bit against
torch on inputs where torch is exact (7-bit activations, or |w| <= 64); the
script aborts on any disagreement.  Cases inside that exact regime store
torch's output (asserted equal to the model); the others store the model's.
"""
import numpy as np
import torch

import common
from common import f32, save_case, fma_f32, choose_qparams, quantize_pt

MODEL_SRC = ("numpy-exact (exact int32 accumulation + fbgemm requantization), validated against "
             "torch 2.15.0 engine=x86 (fbgemm AVX2) on 7-bit-activation and |w|<=64 cases")
DYN_SRC = ("numpy-exact (C++ ChooseQuantizationParams, quantize, exact int32 accumulation, "
           "y = fma(f32(acc), f32(f32(x_scale)*f32(w_scale)), bias)), validated against torch 2.15.0 "
           "engine=x86 (fbgemm AVX2) on reduce_range and |w|<=64 cases")
STATS = {}


# ---------------------------------------------------------------- exact models
def requant_static(acc, xs, ws, bias, out_s, out_zp, relu, per_channel):
    """fbgemm ReQuantizeOutput with float bias. acc: int64 [..., N] (N last)."""
    ws = np.asarray(ws, np.float64).reshape(-1)
    atws = (f32(xs) * ws.astype(f32)).astype(f32)
    mult = (atws / f32(out_s)).astype(f32)
    v = acc.astype(f32)
    if bias is not None:
        b = np.asarray(bias, f32)
        if per_channel:
            bt = (b / atws).astype(f32)
        else:
            rcp = f32(1.0 / float(atws[0]))
            bt = (b * rcp).astype(f32)
        v = (v + bt).astype(f32)
    t = (v * mult).astype(f32)
    assert np.abs(t).max(initial=0) < 2**30, "requantized value would overflow cvtps_epi32"
    y = np.rint(t).astype(np.int64) + out_zp
    return np.clip(y, out_zp if relu else 0, 255).astype(np.uint8)


def linear_acc(x, xzp, w, wzp):
    wz = np.asarray(wzp, np.int64).reshape(-1)
    return (x.astype(np.int64) - xzp) @ (w.astype(np.int64) - wz[:, None]).T


def conv_acc(x, xzp, w, wzp, stride, padding, dilation, groups):
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    ph, pw = padding
    xp = np.full((N, C, H + 2 * ph, W + 2 * pw), xzp, np.int64)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    xp -= xzp
    OH = (H + 2 * ph - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * pw - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    wz = np.asarray(wzp, np.int64).reshape(-1)
    wz = np.broadcast_to(wz, (O,))
    wi = w.astype(np.int64) - wz[:, None, None, None]
    out = np.zeros((N, O, OH, OW), np.int64)
    Og = O // groups
    for g in range(groups):
        for kh in range(KH):
            for kw in range(KW):
                h0 = kh * dilation[0]
                w0 = kw * dilation[1]
                patch = xp[:, g * Cg:(g + 1) * Cg, h0:h0 + stride[0] * (OH - 1) + 1:stride[0], w0:w0 + stride[1] * (OW - 1) + 1:stride[1]]
                out[:, g * Og:(g + 1) * Og] += np.einsum("nchw,oc->nohw", patch, wi[g * Og:(g + 1) * Og, :, kh, kw])
    return out


# ---------------------------------------------------------------- torch helpers
def tq_x(x, s, zp):
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), s, zp)


def tq_w(w, ws, wzp, per_channel, axis=0):
    if per_channel:
        return torch._make_per_channel_quantized_tensor(torch.from_numpy(w), torch.from_numpy(np.asarray(ws, np.float64)),
                                                        torch.from_numpy(np.asarray(wzp, np.int64)), axis)
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(w), float(ws[0]), int(wzp[0]))


def torch_linear(x, xs, xzp, w, ws, wzp, pc, bias, out_s, out_zp, relu):
    torch.backends.quantized.engine = "x86"
    p = torch.ops.quantized.linear_prepack(tq_w(w, ws, wzp, pc), None if bias is None else torch.from_numpy(bias))
    f = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
    return f(tq_x(x, xs, xzp), p, out_s, out_zp).int_repr().numpy()


def torch_conv(x, xs, xzp, w, ws, wzp, pc, bias, st, pad, dil, g, out_s, out_zp, relu):
    # The x86 engine sends symmetric-weight conv to oneDNN on VNNI CPUs; on the
    # reference AVX2-only CPU it uses fbgemm, which the fbgemm engine always does.
    torch.backends.quantized.engine = "fbgemm"
    try:
        p = torch.ops.quantized.conv2d_prepack(tq_w(w, ws, wzp, pc), None if bias is None else torch.from_numpy(bias),
                                               list(st), list(pad), list(dil), g)
        f = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
        return f(tq_x(x, xs, xzp), p, out_s, out_zp).int_repr().numpy()
    finally:
        torch.backends.quantized.engine = "x86"


def rand_scale(rng):
    v = float(10.0 ** rng.uniform(-3, -1))
    return v if rng.random() < 0.5 else float(f32(v))


def pick_out_scale(rng, acc, atws_max, mode):
    r = float(np.abs(acc).max(initial=1)) * atws_max + 1e-12
    if mode == "normal":
        return float(r / rng.uniform(60, 200))
    if mode == "tiny":  # clamps most outputs (but keeps |value| < 2^30)
        return float(r / rng.uniform(3e4, 1e6))
    return float(r * rng.uniform(5, 50))  # huge: everything collapses onto the zero point


def make_weights(rng, shape, wmode):
    if wmode == "small":
        return rng.integers(-64, 65, shape).astype(np.int8)
    w = rng.integers(-128, 128, shape).astype(np.int8)
    w.reshape(-1)[: max(1, w.size // 8)] = -128
    w.reshape(-1)[-1] = 127
    return w


def make_x(rng, shape, xmode, xzp):
    if xmode == "7bit":
        return rng.integers(0, 128, shape).astype(np.uint8)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    x.reshape(-1)[: max(1, x.size // 8)] = 255
    return x


# ---------------------------------------------------------------- linear
def linear_one(rng, M, K, N, pc, has_bias, relu, xzp, xmode, wmode, wzp_mode, omode, save=None, explicit_qs=False):
    x = make_x(rng, (M, K), xmode, xzp)
    w = make_weights(rng, (N, K), wmode)
    C = N if pc else 1
    ws = np.array([rand_scale(rng) * 0.1 for _ in range(C)], np.float64)
    if wzp_mode == "zero":
        wzp = np.zeros(C, np.int64)
    else:
        wzp = rng.integers(-20, 21, C).astype(np.int64)
    xs = rand_scale(rng)
    acc = linear_acc(x, xzp, w, wzp)
    atws = (f32(xs) * ws.astype(f32)).astype(f32)
    out_s = pick_out_scale(rng, acc, float(atws.max()), omode)
    out_zp = int(rng.integers(0, 256)) if omode == "normal" else int(rng.choice([0, 255, 128]))
    bias = None
    if has_bias:
        bias = (rng.standard_normal(N) * float(np.abs(acc).mean() + 1) * float(atws.max())).astype(f32)
        # a few adversarial biases that are exact multiples / near-ties of the accumulator grid
        bias[: max(1, N // 4)] = (np.rint(bias[: max(1, N // 4)] / atws.max()) * atws.max() + atws.max() * 0.5).astype(f32)
    y = requant_static(acc, xs, ws, bias, out_s, out_zp, relu, pc)
    exact = (xmode == "7bit") or (int(np.abs(w.astype(np.int32)).max()) <= 64)
    src = MODEL_SRC
    if exact:
        yt = torch_linear(x, xs, xzp, w, ws, wzp, pc, bias, out_s, out_zp, relu)
        assert common.bits_equal(yt, y), ("linear model disagrees with torch", M, K, N, pc, has_bias, relu, xzp)
        src = common.TORCH_SRC + "; equal to the exact model"
        STATS["linear_validated"] = STATS.get("linear_validated", 0) + 1
    else:
        yt = torch_linear(x, xs, xzp, w, ws, wzp, pc, bias, out_s, out_zp, relu)
        STATS["linear_full_diff"] = STATS.get("linear_full_diff", 0) + int(not common.bits_equal(yt, y))
        STATS["linear_full"] = STATS.get("linear_full", 0) + 1
    if save:
        attrs = {"x_scale": xs, "x_zero_point": xzp, "out_scale": out_s, "out_zero_point": out_zp, "relu": relu}
        if explicit_qs or pc and N == 1:
            attrs["w_qscheme"] = "per_channel" if pc else "per_tensor"
        ins = {"x": x, "w": w, "w_scales": ws, "w_zero_points": wzp}
        if bias is not None:
            ins["bias"] = bias
        save_case("linear", save, ins, {"y": y}, attrs, src)


def gen_linear():
    rng = np.random.default_rng(201)
    # 1) validation sweep (not saved)
    for i in range(400):
        M, K, N = (int(v) for v in rng.integers(1, 40, 3))
        linear_one(rng, M, K, N, bool(i % 2), bool(i % 3), bool(i % 5 == 0), int(rng.choice([0, 128, 255, 37])),
                   "7bit" if i % 4 else "full", "full" if i % 4 else "small", "zero" if i % 3 else "nz", "normal" if i % 7 else "tiny")
    # 2) saved cases
    idx = 0
    shapes = [(1, 1, 1), (1, 7, 3), (3, 17, 5), (4, 64, 16), (5, 33, 9), (2, 130, 7), (7, 9, 1), (1, 5, 1), (9, 31, 17), (16, 48, 24)]
    for si, (M, K, N) in enumerate(shapes):
        for pc in (False, True):
            for xzp in (0, 128, 255):
                xmode = "full" if (idx % 3) else "7bit"
                wmode = "full" if (idx % 5) else "small"
                has_bias = (idx % 4) != 3
                relu = (idx % 3) == 1
                omode = ["normal", "normal", "normal", "tiny", "normal", "huge"][idx % 6]
                wzp_mode = "nz" if (idx % 7 == 5) else "zero"
                name = "m%dk%dn%d_%s_%s%s_xzp%d_%s_%s_%s_%03d" % (M, K, N, "pc" if pc else "pt", "bias" if has_bias else "nobias",
                                                               "_relu" if relu else "", xzp, xmode, wmode, omode, idx)
                linear_one(rng, M, K, N, pc, has_bias, relu, xzp, xmode, wmode, wzp_mode, omode, save=name, explicit_qs=(idx % 2 == 0))
                idx += 1
    # N = 1 per-tensor vs per-channel with identical data and adversarial bias
    for j in range(4):
        seed = 2000 + j
        for pc in (False, True):
            r2 = np.random.default_rng(seed)
            linear_one(r2, 3, 11, 1, pc, True, j % 2 == 1, 128, "full", "full", "zero", "normal",
                       save="n1_%s_bias_%d" % ("per_channel" if pc else "per_tensor", j), explicit_qs=True)


# ---------------------------------------------------------------- conv2d
def conv_one(rng, cfg, save=None):
    N, C, H, W, O, KH, KW, st, pad, dil, g, pc, has_bias, relu, xzp, xmode, wmode, wzp_mode, omode = cfg
    x = make_x(rng, (N, C, H, W), xmode, xzp)
    w = make_weights(rng, (O, C // g, KH, KW), wmode)
    Cn = O if pc else 1
    ws = np.array([rand_scale(rng) * 0.1 for _ in range(Cn)], np.float64)
    wzp = np.zeros(Cn, np.int64) if wzp_mode == "zero" else rng.integers(-10, 11, Cn).astype(np.int64)
    xs = rand_scale(rng)
    acc = conv_acc(x, xzp, w, wzp, st, pad, dil, g)
    atws = (f32(xs) * ws.astype(f32)).astype(f32)
    out_s = pick_out_scale(rng, acc, float(atws.max()), omode)
    out_zp = int(rng.integers(0, 256)) if omode == "normal" else int(rng.choice([0, 255, 128]))
    bias = None
    if has_bias:
        bias = (rng.standard_normal(O) * float(np.abs(acc).mean() + 1) * float(atws.max())).astype(f32)
    acc_l = np.moveaxis(acc, 1, -1)
    y = np.moveaxis(requant_static(acc_l, xs, ws, bias, out_s, out_zp, relu, pc), -1, 1)
    y = np.ascontiguousarray(y)
    wmax = int(np.abs(w.astype(np.int32)).max())
    exact = (wmax <= 64) or (xmode == "7bit" and not (xzp >= 128 and (pad[0] > 0 or pad[1] > 0)))
    yt = torch_conv(x, xs, xzp, w, ws, wzp, pc, bias, st, pad, dil, g, out_s, out_zp, relu)
    src = MODEL_SRC
    if exact:
        assert common.bits_equal(yt, y), ("conv model disagrees with torch", cfg)
        src = common.TORCH_SRC + "; conv via the fbgemm engine (what x86 uses on a CPU without VNNI); equal to the exact model"
        STATS["conv_validated"] = STATS.get("conv_validated", 0) + 1
    else:
        STATS["conv_full"] = STATS.get("conv_full", 0) + 1
        STATS["conv_full_diff"] = STATS.get("conv_full_diff", 0) + int(not common.bits_equal(yt, y))
    if save:
        attrs = {"x_scale": xs, "x_zero_point": xzp, "stride": list(st), "padding": list(pad), "dilation": list(dil), "groups": g,
                 "out_scale": out_s, "out_zero_point": out_zp, "relu": relu}
        if (pc and O == 1) or save.endswith("0"):
            attrs["w_qscheme"] = "per_channel" if pc else "per_tensor"
        ins = {"x": x, "w": w, "w_scales": ws, "w_zero_points": wzp}
        if bias is not None:
            ins["bias"] = bias
        save_case("conv2d", save, ins, {"y": y}, attrs, src)


def gen_conv():
    rng = np.random.default_rng(202)
    geoms = [
        # N, C, H, W, O, KH, KW, stride, pad, dil, groups
        (1, 3, 5, 5, 4, 1, 1, (1, 1), (0, 0), (1, 1), 1),
        (1, 3, 7, 6, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1),
        (2, 4, 8, 8, 6, 3, 3, (2, 2), (1, 1), (1, 1), 1),
        (1, 2, 9, 7, 3, 3, 2, (1, 2), (0, 1), (2, 1), 1),
        (1, 6, 7, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1), 6),   # depthwise
        (1, 8, 6, 5, 8, 3, 3, (2, 1), (1, 1), (1, 1), 8),   # depthwise stride
        (1, 8, 9, 9, 16, 5, 5, (1, 1), (2, 2), (1, 1), 8),  # depthwise multiplier 2
        (1, 8, 6, 6, 8, 3, 3, (1, 1), (1, 1), (1, 1), 2),   # groupwise
        (2, 12, 5, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1), 3),
        (1, 5, 11, 6, 7, 2, 3, (3, 1), (1, 0), (1, 2), 1),
        (1, 16, 4, 4, 8, 1, 1, (1, 1), (0, 0), (1, 1), 1),  # 1x1
        (1, 4, 10, 10, 4, 3, 3, (1, 1), (2, 2), (2, 2), 1),  # dilation 2
        (1, 3, 1, 9, 2, 1, 3, (1, 1), (0, 1), (1, 1), 1),
        (1, 1, 6, 6, 1, 3, 3, (1, 1), (1, 1), (1, 1), 1),    # single channel
    ]
    # validation sweep (not saved)
    for i in range(120):
        gm = geoms[i % len(geoms)]
        cfg = gm + (bool(i % 2), bool(i % 3), bool(i % 5 == 0), int(rng.choice([0, 37, 128, 255])), "7bit" if i % 3 else "full",
                    "full" if i % 3 else "small", "nz" if i % 4 == 1 else "zero", "normal" if i % 6 else "tiny")
        conv_one(rng, cfg)
    idx = 0
    for gm in geoms:
        for v in range(4):
            pc = bool(v % 2)
            xzp = [0, 128, 255, 31][(idx + v) % 4]
            xmode = "7bit" if v == 0 else "full"
            wmode = "small" if (idx % 6 == 5) else "full"
            has_bias = (idx % 4) != 2
            relu = (idx % 3) == 1
            omode = ["normal", "normal", "normal", "tiny", "normal", "huge"][idx % 6]
            wzp_mode = "nz" if idx % 5 == 3 else "zero"
            cfg = gm + (pc, has_bias, relu, xzp, xmode, wmode, wzp_mode, omode)
            Nn, C, H, W, O, KH, KW, st, pad, dil, g = gm
            name = "n%dc%dh%dw%do%d_k%dx%d_s%d%d_p%d%d_d%d%d_g%d_%s_%s%s_xzp%d_%s_%s_%03d" % (
                Nn, C, H, W, O, KH, KW, st[0], st[1], pad[0], pad[1], dil[0], dil[1], g, "pc" if pc else "pt",
                "bias" if has_bias else "nobias", "_relu" if relu else "", xzp, xmode, omode, idx)
            conv_one(rng, cfg, save=name)
            idx += 1


# ---------------------------------------------------------------- linear_dynamic
def dyn_model(x, w, ws, wzp, bias, rr):
    s, z = choose_qparams(float(x.min()), float(x.max()), 0, 255, rr)
    xq = quantize_pt(x, s, z, 0, 255)
    acc = linear_acc(xq, z, w, wzp)
    ws = np.asarray(ws, np.float64).reshape(-1)
    ab = (f32(s) * ws.astype(f32)).astype(f32)
    accf = acc.astype(f32)
    if bias is None:
        return (accf * ab).astype(f32), xq
    return fma_f32(accf, np.broadcast_to(ab, accf.shape), np.broadcast_to(np.asarray(bias, f32), accf.shape)), xq


def torch_dyn(x, w, ws, wzp, pc, bias, rr):
    p = torch.ops.quantized.linear_prepack(tq_w(w, ws, wzp, pc), None if bias is None else torch.from_numpy(bias))
    return torch.ops.quantized.linear_dynamic(torch.from_numpy(x), p, rr).numpy()


def dyn_one(rng, M, K, N, pc, has_bias, rr, wmode, xkind, save=None):
    x = rng.standard_normal((M, K)).astype(f32)
    if xkind == "pos":
        x = np.abs(x) + 0.1
    elif xkind == "neg":
        x = -np.abs(x) - 0.1
    elif xkind == "tiny":
        x = x * f32(1e-6)
    elif xkind == "big":
        x = x * f32(300.0)
    x = x.astype(f32)
    w = make_weights(rng, (N, K), wmode)
    C = N if pc else 1
    ws = np.array([rand_scale(rng) * 0.1 for _ in range(C)], np.float64)
    wzp = np.zeros(C, np.int64) if rng.random() < 0.7 else rng.integers(-8, 9, C).astype(np.int64)
    bias = (rng.standard_normal(N) * 0.5).astype(f32) if has_bias else None
    y, xq = dyn_model(x, w, ws, wzp, bias, rr)
    exact = rr or int(np.abs(w.astype(np.int32)).max()) <= 64 or int(xq.max()) <= 127
    yt = torch_dyn(x, w, ws, wzp, pc, bias, rr)
    src = DYN_SRC
    if exact:
        assert common.bits_equal(yt, y), ("dynamic model disagrees with torch", M, K, N, pc, has_bias, rr, np.abs(yt - y).max())
        src = common.TORCH_SRC + "; equal to the exact model"
        STATS["dyn_validated"] = STATS.get("dyn_validated", 0) + 1
    else:
        STATS["dyn_full"] = STATS.get("dyn_full", 0) + 1
        STATS["dyn_full_diff"] = STATS.get("dyn_full_diff", 0) + int(not common.bits_equal(yt, y))
    if save:
        attrs = {"reduce_range": rr}
        if pc and N == 1 or len(save) % 3 == 0:
            attrs["w_qscheme"] = "per_channel" if pc else "per_tensor"
        ins = {"x": x, "w": w, "w_scales": ws, "w_zero_points": wzp}
        if bias is not None:
            ins["bias"] = bias
        save_case("linear_dynamic", save, ins, {"y": y}, attrs, src)


def gen_linear_dynamic():
    rng = np.random.default_rng(203)
    for i in range(300):
        M, K, N = (int(v) for v in rng.integers(1, 40, 3))
        dyn_one(rng, M, K, N, bool(i % 2), bool(i % 3), bool(i % 4 != 0), "full" if i % 4 else "small",
                ["mixed", "pos", "neg", "tiny", "big"][i % 5])
    idx = 0
    shapes = [(1, 1, 1), (1, 7, 3), (3, 17, 5), (4, 64, 16), (5, 33, 9), (2, 130, 7), (7, 9, 1), (9, 31, 17)]
    for M, K, N in shapes:
        for pc in (False, True):
            for rr in (False, True):
                has_bias = idx % 4 != 1
                wmode = "small" if idx % 7 == 6 else "full"
                xk = ["mixed", "pos", "neg", "mixed", "big", "tiny"][idx % 6]
                name = "m%dk%dn%d_%s_%s_rr%d_%s_%s_%03d" % (M, K, N, "pc" if pc else "pt", "bias" if has_bias else "nobias", rr, xk, wmode, idx)
                dyn_one(rng, M, K, N, pc, has_bias, rr, wmode, xk, save=name)
                idx += 1


# ---------------------------------------------------------------- linear_dynamic_fp16
def gen_fp16():
    rng = np.random.default_rng(204)
    shapes = [(1, 1, 1), (1, 16, 16), (1, 37, 5), (2, 9, 17), (2, 64, 33), (3, 130, 16), (4, 8, 3), (17, 130, 64),
              (1, 600, 20), (5, 1030, 18), (3, 513, 31), (8, 40, 48), (2, 5, 1)]
    for i, (M, K, N) in enumerate(shapes):
        for has_bias in (False, True):
            x = rng.standard_normal((M, K)).astype(f32)
            w = (rng.standard_normal((N, K)) * 0.1).astype(f32)
            if i % 3 == 0:
                w.reshape(-1)[0] = 1e5   # clamped to 65504 before fp16 rounding
                w.reshape(-1)[-1] = -7e4
                if w.size > 2:
                    w.reshape(-1)[1] = 3e-6   # fp16 subnormal
            bias = (rng.standard_normal(N)).astype(f32) if has_bias else None
            p = torch.ops.quantized.linear_prepack_fp16(torch.from_numpy(w), None if bias is None else torch.from_numpy(bias))
            y = torch.ops.quantized.linear_dynamic_fp16(torch.from_numpy(x), p).numpy()
            w16 = np.clip(w, -65504, 65504).astype(np.float16).astype(np.float64)
            ref = x.astype(np.float64) @ w16.T + (0 if bias is None else bias.astype(np.float64))
            S = np.abs(x.astype(np.float64)) @ np.abs(w16).T + (0 if bias is None else np.abs(bias.astype(np.float64)))
            atol = 2e-6 * float(S.max())
            assert np.all(np.abs(y - ref) <= atol), "fp16 result outside the tolerance against float64"
            ins = {"x": x, "w": w}
            if bias is not None:
                ins["bias"] = bias
            save_case("linear_dynamic_fp16", "m%dk%dn%d_%s" % (M, K, N, "bias" if has_bias else "nobias"), ins, {"y": y}, {},
                      common.TORCH_SRC + "; tolerance atol = 2e-6 * max(sum|x||w_fp16| + |bias|) admits any fixed fp32 summation order",
                      atol=atol, rtol=0.0)


def generate():
    gen_linear()
    gen_conv()
    gen_linear_dynamic()
    gen_fp16()
    print("gemm stats:", STATS)
