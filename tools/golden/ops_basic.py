"""quantize / dequantize / observer / choose_qparams_dynamic / fake_quantize cases (all straight from torch)."""
import numpy as np
import torch
import torch.ao.quantization.observer as obsmod

import common
from common import f32, save_case, choose_qparams

TDT = {"quint8": torch.quint8, "qint8": torch.qint8, "qint32": torch.qint32}
NPDT = {"quint8": np.uint8, "qint8": np.int8, "qint32": np.int32}
RANGE = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-2**31, 2**31 - 1)}


def sname(s):
    return ("%.6g" % s).replace("-", "m")


def tie_values(rng, scale, n, kmin, kmax):
    """float32 values x with f32(x * f32(1/scale)) exactly k + 0.5."""
    inv = f32(1.0) / f32(scale)
    out = []
    tries = 0
    while len(out) < n and tries < 100000:
        tries += 1
        k = int(rng.integers(kmin, kmax))
        t = k + 0.5
        x0 = f32(t / float(inv))
        for x in (x0, np.nextafter(x0, f32(-np.inf)), np.nextafter(x0, f32(np.inf))):
            if f32(x * inv) == f32(t):
                out.append(x)
                break
    return np.array(out, dtype=f32)


def gen_quantize_per_tensor():
    rng = np.random.default_rng(101)
    op = "quantize_per_tensor"
    src = common.TORCH_SRC
    idx = 0
    shapes = [(1,), (7,), (31,), (32,), (33,), (64,), (65,), (3, 5, 7), (2, 3, 4, 5), (129,)]
    configs = []
    for dt in ("quint8", "qint8", "qint32"):
        lo, hi = RANGE[dt]
        zps = {"quint8": [0, 1, 128, 255, 77], "qint8": [-128, 0, 127, -3, 50],
               "qint32": [0, -5, 1000, -2**20, 2**24 + 3]}[dt]
        scales = [1.0, 0.5, 2.0 ** -7, 0.1, 0.0473, 0.013223533518612385, 3.7e-5, 17.25]
        for i, zp in enumerate(zps):
            for j in range(3):
                s = scales[(i * 3 + j) % len(scales)]
                configs.append((dt, s, zp, shapes[(i * 3 + j) % len(shapes)]))
    for dt, s, zp, shape in configs:
        lo, hi = RANGE[dt]
        n = int(np.prod(shape))
        span = (hi - lo) * s if dt != "qint32" else 3000.0 * s
        x = rng.uniform(-0.7 * span, 0.7 * span, n).astype(f32)
        # mix in ties and out-of-range values (|x/scale| stays far below 2^31)
        nt = max(1, n // 4)
        tk = tie_values(rng, s, nt, -300 if dt != "qint32" else -3000, 300 if dt != "qint32" else 3000)
        x[: len(tk)] = tk
        if n > 4:
            x[-1] = f32(-1e4 * s)
            x[-2] = f32(1e4 * s)
            x[-3] = f32(0.0)
            x[-4] = f32(-0.0)
        rng.shuffle(x)
        x = x.reshape(shape)
        q = torch.quantize_per_tensor(torch.from_numpy(x), s, zp, TDT[dt]).int_repr().numpy()
        name = "%s_s%s_zp%s_%s_%03d" % (dt, sname(s), sname(zp), "x".join(map(str, shape)), idx)
        save_case(op, name, {"x": x}, {"q": q.astype(NPDT[dt])}, {"scale": s, "zero_point": zp, "dtype": dt}, src)
        idx += 1
    # exact tie grid with power-of-two scales: every k+0.5 in range and beyond
    for dt, zp in (("quint8", 0), ("quint8", 255), ("quint8", 128), ("qint8", -128), ("qint8", 127), ("qint8", 0), ("qint32", 0), ("qint32", -7)):
        s = 0.25
        k = np.arange(-300, 300) + 0.5
        x = (k * s).astype(f32)
        q = torch.quantize_per_tensor(torch.from_numpy(x), s, zp, TDT[dt]).int_repr().numpy()
        save_case(op, "%s_tiegrid_s0.25_zp%s" % (dt, sname(zp)), {"x": x}, {"q": q}, {"scale": s, "zero_point": zp, "dtype": dt}, src)
    # qint32: the zp addition is a float32 addition (large values lose bits)
    for zp, s in ((1000, 1.0), (-1000, 1.0), (123457, 0.5), (2**24 + 1, 1.0), (-2**30, 1.0)):
        x = np.array([123456789.0, -123456789.0, 16777217.0, 2**29, -2**29, 3.5, 1e8 + 7, -987654.5], dtype=f32)
        x = x[np.abs(x.astype(np.float64) / s + zp) < 2**30]
        q = torch.quantize_per_tensor(torch.from_numpy(x), s, zp, torch.qint32).int_repr().numpy()
        save_case(op, "qint32_large_f32add_zp%s_s%s" % (sname(zp), sname(s)), {"x": x}, {"q": q}, {"scale": s, "zero_point": zp, "dtype": "qint32"}, src)


def gen_quantize_per_channel():
    rng = np.random.default_rng(102)
    op = "quantize_per_channel"
    src = common.TORCH_SRC
    shapes_axes = [((4,), 0), ((3, 5), 0), ((3, 5), 1), ((2, 3, 7), 1), ((2, 3, 4, 5), 0), ((2, 3, 4, 5), 1),
                   ((2, 3, 4, 5), 3), ((1, 1), 0), ((5, 33), 0), ((2, 65), 1)]
    idx = 0
    for dt in ("quint8", "qint8", "qint32"):
        lo, hi = RANGE[dt]
        for shape, axis in shapes_axes if dt != "qint32" else shapes_axes[:5]:
            C = shape[axis]
            scales = rng.choice(np.array([1.0, 0.5, 0.1, 0.0473, 2.0 ** -7, 0.013223533518612385, 3e-4, 7.5]), C).astype(np.float64)
            if dt == "qint32":
                zps = rng.integers(-5000, 5000, C).astype(np.int64)
            else:
                zps = rng.integers(lo, hi + 1, C).astype(np.int64)
                zps[0] = lo if idx % 2 else hi
            bshape = [1] * len(shape)
            bshape[axis] = C
            sb = scales.reshape(bshape)
            span = (hi - lo) if dt != "qint32" else 4000
            x = (rng.uniform(-0.7, 0.7, shape) * span * sb).astype(f32)
            # ties for each channel: x = (k+0.5)*s for power-of-two scales, near-ties otherwise
            flat = x.reshape(-1)
            kk = rng.integers(-200, 200, flat.size) + 0.5
            sel = rng.random(flat.size) < 0.3
            ties = (kk * np.broadcast_to(sb, shape).reshape(-1)).astype(f32)
            flat[sel] = ties[sel]
            x = flat.reshape(shape)
            q = torch.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(scales), torch.from_numpy(zps), axis, TDT[dt]).int_repr().numpy()
            name = "%s_%s_axis%d_%03d" % (dt, "x".join(map(str, shape)), axis, idx)
            save_case(op, name, {"x": x, "scales": scales, "zero_points": zps}, {"q": q}, {"axis": axis, "dtype": dt}, src)
            idx += 1
    # clamping with extreme zero points
    for dt, zl in (("quint8", [0, 255, 128]), ("qint8", [-128, 127, 0])):
        scales = np.array([0.1, 0.25, 0.013223533518612385])
        zps = np.array(zl, dtype=np.int64)
        x = (rng.uniform(-60, 60, (3, 17))).astype(f32)
        x[:, 0] = 1e5
        x[:, 1] = -1e5
        q = torch.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(scales), torch.from_numpy(zps), 0, TDT[dt]).int_repr().numpy()
        save_case(op, "%s_clamp_extreme_zp" % dt, {"x": x, "scales": scales, "zero_points": zps}, {"q": q}, {"axis": 0, "dtype": dt}, src)


def gen_dequantize():
    rng = np.random.default_rng(103)
    src = common.TORCH_SRC
    idx = 0
    shapes = [(1,), (7,), (33,), (64,), (65,), (3, 5, 7), (2, 3, 4, 5)]
    for dt in ("quint8", "qint8", "qint32"):
        lo, hi = RANGE[dt]
        zps = {"quint8": [0, 255, 128, 3], "qint8": [-128, 127, 0, -7], "qint32": [0, 744, -2**30, 2**30 + 5]}[dt]
        for i, zp in enumerate(zps):
            for j, s in enumerate((0.1, 0.0473, 2.0 ** -7, 0.013223533518612385 if i % 2 else 123.456)):
                shape = shapes[(i + 2 * j) % len(shapes)]
                if dt == "qint32":
                    # keep q - zp inside int32 (torch computes it with int32 wraparound)
                    q = rng.integers(max(lo, zp - 2**31 + 1), min(hi, zp + 2**31 - 1) + 1, shape, dtype=np.int64).astype(np.int32)
                    q.reshape(-1)[:3] = np.array([zp, max(lo, zp - 2**30), min(hi, zp + 2**24 + 1)], dtype=np.int64).astype(np.int32)[: q.size]
                else:
                    q = rng.integers(lo, hi + 1, shape).astype(NPDT[dt])
                    q.reshape(-1)[:2] = np.array([lo, hi])[: q.size]
                x = torch._make_per_tensor_quantized_tensor(torch.from_numpy(q), s, zp).dequantize().numpy()
                # documented formula: f32(q - zp) * f32(scale)
                m = (q.astype(np.int64) - zp).astype(f32) * f32(s)
                assert common.bits_equal(x, m), ("dequantize formula", dt, s, zp)
                save_case("dequantize_per_tensor", "%s_s%s_zp%s_%s_%03d" % (dt, sname(s), sname(zp), "x".join(map(str, shape)), idx),
                          {"q": q}, {"x": x}, {"scale": s, "zero_point": zp, "dtype": dt}, src)
                idx += 1
    shapes_axes = [((4,), 0), ((3, 5), 1), ((2, 3, 7), 1), ((2, 3, 4, 5), 0), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), 3), ((5, 33), 0)]
    idx = 0
    for dt in ("quint8", "qint8", "qint32"):
        lo, hi = RANGE[dt]
        for shape, axis in shapes_axes:
            C = shape[axis]
            scales = rng.choice(np.array([1.0, 0.1, 0.0473, 2.0 ** -7, 0.013223533518612385, 3e-4, 123.456]), C).astype(np.float64)
            if dt == "qint32":
                zps = rng.integers(-2**20, 2**20, C).astype(np.int64)
                q = rng.integers(-2**30, 2**30, shape).astype(np.int32)
            else:
                zps = rng.integers(lo, hi + 1, C).astype(np.int64)
                q = rng.integers(lo, hi + 1, shape).astype(NPDT[dt])
            x = torch._make_per_channel_quantized_tensor(torch.from_numpy(q), torch.from_numpy(scales), torch.from_numpy(zps), axis).dequantize().numpy()
            save_case("dequantize_per_channel", "%s_%s_axis%d_%03d" % (dt, "x".join(map(str, shape)), axis, idx),
                      {"q": q, "scales": scales, "zero_points": zps}, {"x": x}, {"axis": axis, "dtype": dt}, src)
            idx += 1


OBS = {
    "MinMaxObserver": obsmod.MinMaxObserver,
    "MovingAverageMinMaxObserver": obsmod.MovingAverageMinMaxObserver,
    "PerChannelMinMaxObserver": obsmod.PerChannelMinMaxObserver,
    "MovingAveragePerChannelMinMaxObserver": obsmod.MovingAveragePerChannelMinMaxObserver,
    "HistogramObserver": obsmod.HistogramObserver,
}
QS = {"per_tensor_affine": torch.per_tensor_affine, "per_tensor_symmetric": torch.per_tensor_symmetric,
      "per_channel_affine": torch.per_channel_affine, "per_channel_symmetric": torch.per_channel_symmetric}


def run_observer(kind, attrs, xs):
    kw = {"dtype": TDT[attrs["dtype"]], "qscheme": QS[attrs["qscheme"]]}
    for k in ("reduce_range", "quant_min", "quant_max", "averaging_constant", "ch_axis", "bins", "eps"):
        if k in attrs:
            kw[k] = attrs[k]
    o = OBS[kind](**kw)
    for x in xs:
        o(torch.from_numpy(x))
    s, z = o.calculate_qparams()
    s = s.reshape(-1).to(torch.float32).numpy()
    z = z.reshape(-1).to(torch.int64).numpy()
    return s, z


def gen_observer():
    rng = np.random.default_rng(104)
    src = common.TORCH_SRC
    names = set()

    # torch's qint32 per-channel affine observers compute `zp = qmin - round(min/scale)`
    # with `.to(torch.int)`, which overflows int32 when |min/scale| >= 2^31 (these two
    # draws). rquant computes the zero point exactly instead (docs/numerics.md §3), so
    # no case pins the overflow.
    int32_overflow = {
        "MovingAveragePerChannelMinMaxObserver_qint32_per_channel_affine_rr0_ax3_084",
        "PerChannelMinMaxObserver_qint32_per_channel_affine_rr0_ax3_057",
    }

    def emit(name, attrs, xs):
        if name in int32_overflow:
            return
        s, z = run_observer(attrs["observer"], attrs, xs)
        assert name not in names
        names.add(name)
        save_case("observer", name, {"x%d" % i: x for i, x in enumerate(xs)}, {"scale": s, "zero_point": z}, attrs, src)

    def batches(shape, k, grow=False, offs=0.0):
        out = []
        for i in range(k):
            amp = (1.5 ** i) if grow else 1.0
            out.append((rng.standard_normal(shape) * amp + offs * (i + 1)).astype(f32))
        return out

    idx = 0
    pt = ["MinMaxObserver", "MovingAverageMinMaxObserver"]
    for kind in pt:
        for dt in ("quint8", "qint8", "qint32"):
            for qs in ("per_tensor_affine", "per_tensor_symmetric"):
                for rr in (False, True):
                    if (dt == "qint32" or (dt == "quint8" and qs.endswith("symmetric"))) and rr:
                        continue
                    attrs = {"observer": kind, "dtype": dt, "qscheme": qs, "reduce_range": rr}
                    nb = 1 + idx % 3
                    shape = [(17,), (3, 5), (2, 3, 4)][idx % 3]
                    xs = batches(shape, nb, grow=(idx % 2 == 0), offs=[0, 0.7, -0.9][idx % 3])
                    if dt == "qint32":
                        xs = [x * 1000 for x in xs]
                    if kind.startswith("Moving") and idx % 2:
                        attrs["averaging_constant"] = 0.25
                    emit("%s_%s_%s_rr%d_%03d" % (kind, dt, qs, rr, idx), attrs, xs)
                    idx += 1
        # custom ranges
        for dt, qmin, qmax in (("quint8", 0, 15), ("quint8", 0, 127), ("qint8", -64, 63), ("qint8", -127, 127), ("quint8", 3, 200)):
            for qs in ("per_tensor_affine", "per_tensor_symmetric"):
                if qmin > 0:
                    continue
                attrs = {"observer": kind, "dtype": dt, "qscheme": qs, "quant_min": qmin, "quant_max": qmax}
                emit("%s_%s_%s_q%d_%d_%03d" % (kind, dt, qs, qmin, qmax, idx), attrs, batches((2, 9), 2, grow=True, offs=0.3))
                idx += 1
        # all-positive, all-negative, all-zero, constant, tiny range (eps clamp), custom eps
        specials = {
            "allpos": [np.abs(x) + 1 for x in batches((11,), 2)],
            "allneg": [-np.abs(x) - 0.5 for x in batches((11,), 2)],
            "allzero": [np.zeros((8,), f32), np.zeros((8,), f32)],
            "const": [np.full((9,), 2.5, f32)],
            "constneg": [np.full((9,), -0.375, f32), np.full((9,), -0.375, f32)],
            "tiny": [(rng.standard_normal(10) * 1e-9).astype(f32)],
        }
        for sk, xs in specials.items():
            for dt, qs in (("quint8", "per_tensor_affine"), ("qint8", "per_tensor_symmetric")):
                attrs = {"observer": kind, "dtype": dt, "qscheme": qs}
                emit("%s_%s_%s_%s" % (kind, sk, dt, qs), attrs, [x.astype(f32) for x in xs])
        attrs = {"observer": kind, "dtype": "quint8", "qscheme": "per_tensor_affine", "eps": 2.0 ** -12}
        emit("%s_eps2m12_tiny" % kind, attrs, [(rng.standard_normal(10) * 1e-5).astype(f32)])
    # per channel
    pc = ["PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"]
    for kind in pc:
        for dt in ("quint8", "qint8", "qint32"):
            for qs in ("per_channel_affine", "per_channel_symmetric"):
                for rr in (False, True):
                    if (dt == "qint32" or (dt == "quint8" and qs.endswith("symmetric"))) and rr:
                        continue
                    for ax, shape in ((0, (3, 7)), (1, (2, 4, 5)), (3, (2, 3, 2, 5))):
                        if (idx % 3) != ax % 3 and ax != 0:
                            idx += 1
                            continue
                        attrs = {"observer": kind, "dtype": dt, "qscheme": qs, "reduce_range": rr, "ch_axis": ax}
                        if kind.startswith("Moving") and idx % 2:
                            attrs["averaging_constant"] = 0.5
                        xs = batches(shape, 1 + idx % 3, grow=True, offs=[0, 0.8, -1.1][idx % 3])
                        if dt == "qint32":
                            xs = [x * 1000 for x in xs]
                        emit("%s_%s_%s_rr%d_ax%d_%03d" % (kind, dt, qs, rr, ax, idx), attrs, xs)
                        idx += 1
        for dt, qmin, qmax in (("quint8", 0, 15), ("qint8", -127, 127), ("qint8", -8, 7)):
            attrs = {"observer": kind, "dtype": dt, "qscheme": "per_channel_symmetric" if dt == "qint8" else "per_channel_affine",
                     "quant_min": qmin, "quant_max": qmax, "ch_axis": 0}
            emit("%s_%s_q%d_%d" % (kind, dt, qmin, qmax), attrs, batches((4, 6), 2, grow=True, offs=0.2))
        # a channel that is all zero, one constant, one all-negative
        x = rng.standard_normal((4, 8)).astype(f32)
        x[0] = 0
        x[1] = 1.25
        x[2] = -np.abs(x[2]) - 0.1
        x[3] = np.abs(x[3])
        for dt, qs in (("quint8", "per_channel_affine"), ("qint8", "per_channel_symmetric"), ("qint8", "per_channel_affine")):
            attrs = {"observer": kind, "dtype": dt, "qscheme": qs, "ch_axis": 0}
            emit("%s_specialchannels_%s_%s" % (kind, dt, qs), attrs, [x, x * 0.5])
    # histogram
    kind = "HistogramObserver"
    hidx = 0
    for dt, qs, rr in (("quint8", "per_tensor_affine", False), ("quint8", "per_tensor_affine", True),
                       ("qint8", "per_tensor_affine", False), ("qint8", "per_tensor_symmetric", False),
                       ("quint8", "per_tensor_symmetric", False), ("qint8", "per_tensor_symmetric", True)):
        for bins in (2048, 256, 64):
            for mode in ("single", "grow", "shrink", "shift"):
                if (hidx % 2) and mode == "shrink":
                    hidx += 1
                    continue
                attrs = {"observer": kind, "dtype": dt, "qscheme": qs, "reduce_range": rr}
                if bins != 2048:
                    attrs["bins"] = bins
                n = [50, 37, 64][hidx % 3]
                if mode == "single":
                    xs = [(rng.standard_normal(n) + 0.3).astype(f32)]
                elif mode == "grow":
                    xs = [(rng.standard_normal(n) * a).astype(f32) for a in (0.5, 1.7, 6.0)]
                elif mode == "shrink":
                    xs = [(rng.standard_normal(n) * a).astype(f32) for a in (4.0, 1.0)]
                else:
                    xs = [(rng.standard_normal(n) + o).astype(f32) for o in (0.0, 3.0, -5.0)]
                emit("hist_%s_%s_rr%d_b%d_%s_%03d" % (dt, qs, rr, bins, mode, hidx), attrs, xs)
                hidx += 1
    for sk, xs in (("allzero", [np.zeros(64, f32)]), ("allzero_then_data", [np.zeros(20, f32), (rng.standard_normal(20)).astype(f32)]),
                   ("const", [np.full(30, 0.75, f32)]), ("const_twice", [np.full(30, -1.5, f32), np.full(30, -1.5, f32)]),
                   ("allpos", [np.abs(rng.standard_normal(40)).astype(f32) + 2]),
                   ("allneg", [-np.abs(rng.standard_normal(40)).astype(f32) - 2]),
                   ("outlier", [np.concatenate([rng.standard_normal(60), [40.0]]).astype(f32)]),
                   ("heavy_tail", [rng.standard_cauchy(80).astype(f32).clip(-100, 100)])):
        attrs = {"observer": kind, "dtype": "quint8", "qscheme": "per_tensor_affine"}
        emit("hist_%s" % sk, attrs, xs)
    attrs = {"observer": kind, "dtype": "quint8", "qscheme": "per_tensor_affine", "quant_min": 0, "quant_max": 127}
    emit("hist_q0_127_grow", attrs, [(rng.standard_normal(50) * a).astype(f32) for a in (1.0, 3.0)])


def gen_choose_qparams():
    rng = np.random.default_rng(105)
    op = "choose_qparams_dynamic"
    src = common.TORCH_SRC
    cases = {
        "mixed": rng.standard_normal(40).astype(f32),
        "mixed_skew": (rng.standard_normal(33) + 2.0).astype(f32),
        "all_positive": (np.abs(rng.standard_normal(30)) + 0.5).astype(f32),
        "all_negative": (-np.abs(rng.standard_normal(30)) - 0.5).astype(f32),
        "all_zero": np.zeros(16, f32),
        "single": np.array([3.25], f32),
        "single_neg": np.array([-0.001], f32),
        "tiny_mixed": (rng.standard_normal(20) * 1e-4).astype(f32),
        "tiny_pos": (np.abs(rng.standard_normal(20)) * 1e-4).astype(f32),
        "tiny_neg": (-np.abs(rng.standard_normal(20)) * 1e-4).astype(f32),
        "tiny_1e-8": (rng.standard_normal(20) * 1e-8).astype(f32),
        "at_floor": np.array([0.0, 6.1e-5 * 255], f32),
        "just_below_floor": np.array([-1e-3, 0.0124], f32),
        "big": (rng.standard_normal(25) * 1e4).astype(f32),
        "2d": rng.standard_normal((3, 7)).astype(f32),
        "near_symmetric": np.array([-1.0, 1.0, 0.5], f32),
        "zp_tie_region": np.array([-0.5, 127.5 / 255 * 1.5], f32),
        "max_only": np.array([0.0, 0.0, 10.0], f32),
        "min_only": np.array([-10.0, 0.0], f32),
    }
    for name, x in cases.items():
        for rr in (False, True):
            s, z = torch._choose_qparams_per_tensor(torch.from_numpy(x), rr)
            xmin, xmax = float(x.min()), float(x.max())
            ms, mz = choose_qparams(xmin, xmax, 0, 255, rr)
            assert ms == s and mz == z, ("choose_qparams model", name, rr, s, z, ms, mz)
            save_case(op, "%s_rr%d" % (name, rr), {"x": x}, {"scale": np.array([s], np.float64), "zero_point": np.array([z], np.int64)},
                      {"dtype": "quint8", "reduce_range": rr}, src)
    # random sweep (validates the model too)
    for i in range(6):
        x = (rng.standard_normal(12) * 10.0 ** rng.uniform(-5, 2) + rng.uniform(-2, 2) * 10.0 ** rng.uniform(-5, 1)).astype(f32)
        rr = bool(i % 2)
        s, z = torch._choose_qparams_per_tensor(torch.from_numpy(x), rr)
        assert choose_qparams(float(x.min()), float(x.max()), 0, 255, rr) == (s, z)
        save_case(op, "random_%02d_rr%d" % (i, rr), {"x": x}, {"scale": np.array([s], np.float64), "zero_point": np.array([z], np.int64)},
                  {"dtype": "quint8", "reduce_range": rr}, src)
    for i in range(2000):
        x = (rng.standard_normal(5) * 10.0 ** rng.uniform(-9, 3) + rng.uniform(-2, 2) * 10.0 ** rng.uniform(-9, 2)).astype(f32)
        rr = bool(i % 2)
        s, z = torch._choose_qparams_per_tensor(torch.from_numpy(x), rr)
        assert choose_qparams(float(x.min()), float(x.max()), 0, 255, rr) == (s, z), (x, rr)


def gen_fake_quant():
    rng = np.random.default_rng(106)
    src = common.TORCH_SRC
    idx = 0
    for qmin, qmax in ((0, 255), (-128, 127), (0, 127), (0, 15), (-8, 7), (-127, 127), (-2**31, 2**31 - 1)):
        for s in (0.1, 2.0 ** -5, 0.00214854861, 0.0473):
            if qmin == -2**31 and s != 0.1 and s != 2.0 ** -5:
                continue
            zps = sorted({qmin, qmax, (qmin + qmax) // 2}) if qmin != -2**31 else [0, 1000]
            zp = zps[idx % len(zps)]
            n = [69, 7, 64, 130][idx % 4]
            shape = [(n,), (3, n // 3 + 1), (n,), (2, 5, 13)][idx % 4]
            cnt = int(np.prod(shape))
            span = min(qmax - qmin, 600) * s
            x = rng.uniform(-0.8 * span, 0.8 * span, cnt) + (zp - (qmin + qmax) / 2) * 0
            x = x.astype(f32)
            tk = tie_values(rng, s, cnt // 4, -300, 300)
            x[: len(tk)] = tk
            x[-1] = f32(1e3 * span)
            x[-2] = f32(-1e3 * span)
            rng.shuffle(x)
            x = x.reshape(shape)
            g = rng.standard_normal(shape).astype(f32)
            xt = torch.from_numpy(x.copy()).requires_grad_(True)
            y = torch.fake_quantize_per_tensor_affine(xt, s, zp, qmin, qmax)
            y.backward(torch.from_numpy(g))
            yy = y.detach().numpy()
            gx = xt.grad.numpy()
            attrs = {"scale": s, "zero_point": zp, "quant_min": qmin, "quant_max": qmax}
            save_case("fake_quantize_per_tensor", "s%s_zp%d_q%d_%d_%03d" % (sname(s), zp, qmin, qmax, idx),
                      {"x": x, "grad_y": g}, {"y": yy, "grad_x": gx}, attrs, src)
            idx += 1
    idx = 0
    for qmin, qmax in ((0, 255), (-128, 127), (0, 127), (-127, 127), (0, 15)):
        for shape, axis in (((2, 3, 4, 5), 1), ((4, 9), 0), ((3, 17), 1), ((2, 3, 4, 5), 3), ((5,), 0)):
            C = shape[axis]
            scales = rng.choice(np.array([0.1, 2.0 ** -5, 0.00214854861, 0.0473, 1.5], f32), C).astype(f32)
            zps = rng.integers(qmin, qmax + 1, C).astype(np.int32)
            zps[0] = qmin if idx % 2 else qmax
            bshape = [1] * len(shape)
            bshape[axis] = C
            sb = scales.reshape(bshape).astype(np.float64)
            x = (rng.uniform(-0.8, 0.8, shape) * (qmax - qmin) * sb)
            kk = rng.integers(-150, 150, shape) + 0.5
            sel = rng.random(shape) < 0.3
            x = np.where(sel, kk * sb, x).astype(f32)  # exact ties where the scale is a power of two
            x.reshape(-1)[0] = 1e4
            if x.size > 1:
                x.reshape(-1)[-1] = -1e4
            g = rng.standard_normal(shape).astype(f32)
            xt = torch.from_numpy(x.copy()).requires_grad_(True)
            y = torch.fake_quantize_per_channel_affine(xt, torch.from_numpy(scales), torch.from_numpy(zps), axis, qmin, qmax)
            y.backward(torch.from_numpy(g))
            attrs = {"axis": axis, "quant_min": qmin, "quant_max": qmax}
            save_case("fake_quantize_per_channel", "%s_axis%d_q%d_%d_%03d" % ("x".join(map(str, shape)), axis, qmin, qmax, idx),
                      {"x": x, "grad_y": g, "scales": scales, "zero_points": zps}, {"y": y.detach().numpy(), "grad_x": xt.grad.numpy()}, attrs, src)
            idx += 1


def generate():
    gen_quantize_per_tensor()
    gen_quantize_per_channel()
    gen_dequantize()
    gen_observer()
    gen_choose_qparams()
    gen_fake_quant()
