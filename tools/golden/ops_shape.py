"""constant_pad2d / channel_shuffle / upsample_nearest2d / upsample_bilinear2d / mean cases
(outputs from torch, each asserted equal to a NumPy model of rquant's formula; see README.md).
Inputs are NCHW-contiguous with C >= 2 and H*W > 1, so torch takes its NCHW kernels
(a tensor with C == 1 or H == W == 1 is also channels-last contiguous)."""
import math
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

import common
from common import f32, save_case
from ops_elementwise import tq

NCHW_SRC = "; NCHW-contiguous input with C>1 and H*W>1 (the NCHW kernel)"


def shape_name(shape):
    return "x".join(map(str, shape))


def quant(v, s, z):
    inv = f32(1.0) / f32(s)
    return int(np.clip(np.rint(f32(f32(v) * inv)) + z, 0, 255))


# ------------------------------------------------------------------ constant_pad2d
def gen_constant_pad2d():
    rng = np.random.default_rng(501)
    cases = [
        ((1, 2, 5, 6), [-1, 2, 0, 1], 0.0), ((1, 3, 4, 4), [1, 1, 1, 1], 0.0), ((2, 2, 3, 7), [0, 1, 0, 1], 0.0),
        ((1, 4, 6, 6), [2, 0, 3, 0], 0.5), ((2, 3, 5), [1, 2, 3, 4], 0.0), ((3, 4, 4), [-1, -1, -1, -1], 0.0),
        ((1, 2, 5, 5), [-2, 3, 1, -3], 1.25), ((1, 5, 3, 8), [0, 1, 1, 2], 0.375), ((2, 3, 7, 2), [4, 4, 0, 0], -1e6),
        ((1, 2, 4, 4), [0, 0, 0, 0], 0.0), ((2, 6, 2, 3), [1, 0, 0, 1], 1e6), ((1, 3, 9, 9), [-4, -4, 2, 2], 0.3),
        ((4, 2, 3), [0, -2, 0, 0], 0.0), ((1, 2, 3, 3), [5, 5, 5, 5], -0.125),
    ]
    for i, (shape, pad, value) in enumerate(cases):
        s = [0.05, 0.25, float(f32(0.0371)), 0.1][i % 4]
        z = [128, 0, 255, 17, 100][i % 5]
        x = rng.integers(0, 256, shape).astype(np.uint8)
        y = torch.constant_pad_nd(tq(x, s, z), pad, value).int_repr().numpy()
        l, r, t, b = pad
        H, W = shape[-2], shape[-1]
        fill = quant(value, s, z)
        model = np.full(shape[:-2] + (H + t + b, W + l + r), fill, np.uint8)
        for oy in range(H + t + b):
            for ox in range(W + l + r):
                iy, ix = oy - t, ox - l
                if 0 <= iy < H and 0 <= ix < W:
                    model[..., oy, ox] = x[..., iy, ix]
        assert (model == y).all(), ("constant_pad2d", shape, pad, value)
        attrs = {"scale": s, "zero_point": z, "pad": pad}
        if value != 0.0 or i % 2:
            attrs["value"] = value
        name = "case%02d_%s_pad%s_v%s" % (i, shape_name(shape), "_".join(str(v).replace("-", "m") for v in pad),
                                          ("%g" % value).replace("-", "m"))
        save_case("constant_pad2d", name, {"x": x}, {"y": y}, attrs, common.TORCH_SRC + "; fill = quantize(value) (ties included)")


# ------------------------------------------------------------------ channel_shuffle
def gen_channel_shuffle():
    rng = np.random.default_rng(502)
    cases = [((1, 3, 4, 4), 3), ((2, 6, 3, 5), 2), ((1, 6, 3, 5), 3), ((1, 12, 2, 2), 4), ((2, 8, 1, 7), 8), ((1, 4, 5, 5), 1),
             ((3, 10, 2, 3), 5), ((1, 24, 3, 3), 2), ((1, 2, 7, 7), 2)]
    for i, (shape, g) in enumerate(cases):
        x = rng.integers(0, 256, shape).astype(np.uint8)
        y = F.channel_shuffle(tq(x, 0.1, 7), g).int_repr().numpy()
        N, C, H, W = shape
        model = x.reshape(N, g, C // g, H, W).transpose(0, 2, 1, 3, 4).reshape(shape)
        assert (model == y).all(), "channel_shuffle"
        save_case("channel_shuffle", "case%d_%s_g%d" % (i, shape_name(shape), g), {"x": x}, {"y": y}, {"groups": g}, common.TORCH_SRC)


# ------------------------------------------------------------------ upsampling
def scales_value(scale, inp, out):
    if scale is not None and scale > 0:
        return f32(1.0 / scale)
    return f32(f32(inp) / f32(out))


def nearest_model(x, oh, ow, sc):
    N, C, H, W = x.shape
    if oh == H and ow == W:
        return x.copy()
    sh = scales_value(sc[0] if sc else None, H, oh)
    sw = scales_value(sc[1] if sc else None, W, ow)
    rows = [min(int(math.floor(f32(f32(o) * sh))), H - 1) for o in range(oh)]
    cols = [min(int(math.floor(f32(f32(o) * sw))), W - 1) for o in range(ow)]
    return x[:, :, rows][:, :, :, cols]


def bilinear_taps(inp, out, align, scale, fused=False):
    if align:
        step = f32(f32(inp - 1) / f32(out - 1)) if out > 1 else f32(0)
    else:
        step = scales_value(scale, inp, out)
    res = []
    for o in range(out):
        if align:
            src = f32(step * f32(o))
        else:
            if fused:
                src = common.fma_f32(step, f32(f32(o) + f32(0.5)), f32(-0.5))[()]
            else:
                src = f32(f32(step * f32(f32(o) + f32(0.5))) - f32(0.5))
            src = f32(0) if src < 0 else src
        i0 = int(src)
        l1 = f32(src - f32(i0))
        res.append((i0, 1 if i0 < inp - 1 else 0, f32(f32(1) - l1), l1))
    return res


def bilinear_model(x, oh, ow, align, sc, zp, fused=(False, False)):
    """PyTorch's NCHW quantized kernel: f32, left to right, no fused multiply-add
    (`fused` gives the variants a contracting compiler would make: index, value)."""
    N, C, H, W = x.shape
    if H == oh and W == ow:
        return x.copy()
    ty = bilinear_taps(H, oh, align, sc[0] if sc else None, fused[0])
    tx = bilinear_taps(W, ow, align, sc[1] if sc else None, fused[0])
    y = np.zeros((N, C, oh, ow), np.uint8)
    xf = x.astype(f32)
    fma = common.fma_f32
    for i, (h0, hp, hl0, hl1) in enumerate(ty):
        for j, (w0, wp, wl0, wl1) in enumerate(tx):
            p00, p01 = xf[:, :, h0, w0], xf[:, :, h0, w0 + wp]
            p10, p11 = xf[:, :, h0 + hp, w0], xf[:, :, h0 + hp, w0 + wp]
            if fused[1]:
                a = fma(wl1, p01, (wl0 * p00).astype(f32))
                b = fma(wl1, p11, (wl0 * p10).astype(f32))
                r = fma(hl1, b, (hl0 * a).astype(f32))
            else:
                a = ((wl0 * p00).astype(f32) + (wl1 * p01).astype(f32)).astype(f32)
                b = ((wl0 * p10).astype(f32) + (wl1 * p11).astype(f32)).astype(f32)
                r = ((hl0 * a).astype(f32) + (hl1 * b).astype(f32)).astype(f32)
            r = (r - f32(zp)).astype(f32)
            y[:, :, i, j] = np.clip(np.rint(r) + zp, 0, 255)
    return y


def upsample_cases():
    # (shape, output_size or None, scale_factors or None)
    return [
        ((1, 2, 3, 4), (5, 7), None), ((1, 3, 4, 4), (8, 8), None), ((2, 2, 5, 3), (2, 2), None), ((1, 4, 3, 3), None, (2.0, 2.0)),
        ((1, 2, 3, 5), None, (1.2, 1.7)), ((1, 2, 3, 3), None, (1.2, 1.2)), ((1, 3, 6, 4), None, (0.5, 1.5)),
        ((1, 2, 7, 9), (3, 13), None), ((2, 3, 2, 6), (9, 6), None), ((1, 2, 4, 5), None, (2.3, 0.7)), ((1, 5, 1, 6), (3, 11), None),
        ((1, 2, 6, 6), (6, 6), None), ((1, 3, 5, 4), None, (3.0, 2.5)), ((1, 16, 3, 3), (7, 5), None), ((1, 2, 10, 10), (3, 4), None),
    ]


def gen_upsample():
    rng = np.random.default_rng(503)
    for i, (shape, osz, sf) in enumerate(upsample_cases()):
        x = rng.integers(0, 256, shape).astype(np.uint8)
        H, W = shape[2], shape[3]
        oh, ow = osz if osz else (int(math.floor(H * sf[0])), int(math.floor(W * sf[1])))
        q = tq(x, 0.1, 7)
        y = torch._C._nn.upsample_nearest2d(q, list(osz) if osz else None, list(sf) if sf else None).int_repr().numpy()
        assert y.shape == (shape[0], shape[1], oh, ow), (y.shape, oh, ow)
        assert (nearest_model(x, oh, ow, sf) == y).all(), ("upsample_nearest2d", shape, osz, sf)
        attrs = {"output_size": list(osz)} if osz else {"scale_factors": list(sf)}
        how = "to%dx%d" % osz if osz else "sf%gx%g" % sf
        save_case("upsample_nearest2d", "case%02d_%s_%s" % (i, shape_name(shape), how), {"x": x}, {"y": y}, attrs,
                  common.TORCH_SRC + NCHW_SRC)
    for i, (shape, osz, sf) in enumerate(upsample_cases()):
        for align in (False, True):
            x = rng.integers(0, 256, shape).astype(np.uint8)
            s = [0.1, 0.05, float(f32(0.0371))][i % 3]
            z = [255, 0, 128, 31][(i + align) % 4]
            H, W = shape[2], shape[3]
            oh, ow = osz if osz else (int(math.floor(H * sf[0])), int(math.floor(W * sf[1])))
            y = torch._C._nn.upsample_bilinear2d(tq(x, s, z), list(osz) if osz else None, align,
                                                 list(sf) if sf else None).int_repr().numpy()
            assert (bilinear_model(x, oh, ow, align, sf, z) == y).all(), ("upsample_bilinear2d", shape, osz, sf, align)
            attrs = {"scale": s, "zero_point": z}
            attrs.update({"output_size": list(osz)} if osz else {"scale_factors": list(sf)})
            if align or i % 2:
                attrs["align_corners"] = align
            how = "to%dx%d" % osz if osz else "sf%gx%g" % sf
            save_case("upsample_bilinear2d", "case%02d_%s_%s_ac%d" % (i, shape_name(shape), how, align), {"x": x}, {"y": y}, attrs,
                      common.TORCH_SRC + NCHW_SRC)


def gen_bilinear_pinning():
    """Inputs where a compiler's fused multiply-adds (in the source index or in
    the interpolation) would give another output: they pin PyTorch's unfused
    NCHW kernel."""
    rng = np.random.default_rng(505)
    saved = 0
    for trial in range(3000):
        N, C, H, W = 1, 2, int(rng.integers(2, 9)), int(rng.integers(2, 9))
        align = bool(trial % 2)
        oh, ow = int(rng.integers(1, 20)), int(rng.integers(1, 20))
        x = rng.integers(0, 256, (N, C, H, W)).astype(np.uint8)
        zp = int(rng.integers(0, 256))
        base = bilinear_model(x, oh, ow, align, None, zp)
        if all((bilinear_model(x, oh, ow, align, None, zp, f) == base).all() for f in ((True, False), (False, True))):
            continue
        y = torch._C._nn.upsample_bilinear2d(tq(x, 0.1, zp), [oh, ow], align, None).int_repr().numpy()
        assert (y == base).all(), "upsample_bilinear2d pinning"
        save_case("upsample_bilinear2d", "pin%d_1x2x%dx%d_to%dx%d_ac%d" % (saved, H, W, oh, ow, align), {"x": x}, {"y": y},
                  {"scale": 0.1, "zero_point": zp, "output_size": [oh, ow], "align_corners": align},
                  common.TORCH_SRC + NCHW_SRC + "; an input where fused multiply-adds would give another output")
        saved += 1
        if saved == 3:
            return
    raise RuntimeError("no pinning input for upsample_bilinear2d")


# ------------------------------------------------------------------ mean
def gen_mean():
    rng = np.random.default_rng(504)
    cases = [((4, 6), [0], False), ((4, 6), [1], False), ((1, 8, 5, 5), [2, 3], True), ((2, 4, 7, 7), [-1, -2], False),
             ((2, 3, 4, 5), [1], True), ((2, 3, 4, 5), [0, 2], False), ((3, 33), [-1], True), ((2, 5, 6), [], False),
             ((1, 16, 3, 3), [3, 2], False), ((2, 3, 4), [1, 2], True), ((5,), [0], False), ((1, 32, 14, 14), [2, 3], True)]
    for i, (shape, dims, keep) in enumerate(cases):
        s = [0.05, 0.1, float(f32(0.0371))][i % 3]
        z = [128, 0, 255, 7][i % 4]
        nd = len(shape)
        red = sorted(set(d % nd for d in dims)) if dims else list(range(nd))
        inner = red == list(range(nd - len(red), nd))
        n = int(np.prod([shape[d] for d in red]))
        for attempt in range(5000):
            x = rng.integers(0, 256, shape).astype(np.uint8)
            if i % 4 == 2 and inner:
                # exact .5 ties of the mean (to even, on the inner-dimension kernel)
                x = (rng.integers(0, 2, shape) * 1 + 100).astype(np.uint8)
            sums = x.astype(np.int64).sum(axis=tuple(red), keepdims=True)
            if inner:
                break
            # torch's other path is dequantize -> float mean -> quantize: keep it
            # >= 0.001 of a step away from the .5 boundaries
            d = np.abs(np.array([float(Fraction(int(v), n) - (Fraction(int(v), n).__floor__() + Fraction(1, 2)))
                                 for v in sums.reshape(-1)]))
            if (d >= 1e-3).all():
                break
        else:
            raise RuntimeError("mean: no input far from boundaries")
        q = tq(x, s, z)
        y = (torch.mean(q, dims, keep) if dims else torch.mean(q, dims, keep)).int_repr().numpy()
        model = np.rint((sums.astype(f32) / f32(n)).astype(f32)).astype(np.uint8)
        if not keep:
            model = model.reshape([shape[d] for d in range(nd) if d not in red])
        assert y.shape == model.shape and (y == model).all(), ("mean", shape, dims, keep)
        src = common.TORCH_SRC + ("; the inner-dimension kernel" if inner else
                                  "; dequantize/float-mean path, means >= 0.001 of a step from .5 ties")
        save_case("mean", "case%02d_%s_dim%s_keep%d" % (i, shape_name(shape), "_".join(str(d).replace("-", "m") for d in dims) or "all",
                                                         keep),
                  {"x": x}, {"y": y}, {"scale": s, "zero_point": z, "dim": dims, "keepdim": keep}, src)


def generate():
    gen_constant_pad2d()
    gen_channel_shuffle()
    gen_upsample()
    gen_bilinear_pinning()
    gen_mean()
