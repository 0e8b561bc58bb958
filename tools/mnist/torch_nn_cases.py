#!/usr/bin/env python3
"""PyTorch 2.15 values for rquant-nn's module tests (run once; CI never needs torch).

    /path/to/venv/bin/python tools/mnist/torch_nn_cases.py > crates/nn/tests/data/torch_nn_cases.json

Every case stores its inputs, so the Rust tests recompute from the same
numbers. Float results are compared with a tolerance (different summation
order); the conv-bn / linear-bn folding is compared bit for bit.
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(1234)


def t(x):
    return {"shape": list(x.shape), "data": x.detach().reshape(-1).tolist()}


cases = {}

# conv2d forward/backward: stride 2, padding 1, dilation 2, groups 2
x = torch.randn(2, 4, 7, 6, requires_grad=True)
conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
y = conv(x)
r = torch.randn_like(y)
(y * r).sum().backward()
cases["conv2d"] = {"x": t(x), "w": t(conv.weight), "b": t(conv.bias), "y": t(y), "r": t(r),
                   "dx": t(x.grad), "dw": t(conv.weight.grad), "db": t(conv.bias.grad),
                   "stride": 2, "padding": 1, "dilation": 2, "groups": 2}

# linear
x = torch.randn(5, 7, requires_grad=True)
lin = nn.Linear(7, 3)
y = lin(x)
r = torch.randn_like(y)
(y * r).sum().backward()
cases["linear"] = {"x": t(x), "w": t(lin.weight), "b": t(lin.bias), "y": t(y), "r": t(r),
                   "dx": t(x.grad), "dw": t(lin.weight.grad), "db": t(lin.bias.grad)}

# batch norm (train step then eval)
x = torch.randn(3, 4, 5, 5, requires_grad=True)
bn = nn.BatchNorm2d(4)
with torch.no_grad():
    bn.weight.copy_(torch.randn(4))
    bn.bias.copy_(torch.randn(4))
y = bn(x)
r = torch.randn_like(y)
(y * r).sum().backward()
bn.eval()
y_eval = bn(x)
cases["batchnorm"] = {"x": t(x), "gamma": t(bn.weight), "beta": t(bn.bias), "y": t(y), "r": t(r),
                      "dx": t(x.grad), "dgamma": t(bn.weight.grad), "dbeta": t(bn.bias.grad),
                      "running_mean": t(bn.running_mean), "running_var": t(bn.running_var), "y_eval": t(y_eval)}

# pooling
x = torch.randn(2, 3, 9, 8, requires_grad=True)
ym = F.max_pool2d(x, 3, 2, 1)
ya = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
yd = F.adaptive_avg_pool2d(x, (4, 3))
rm, ra, rd = torch.randn_like(ym), torch.randn_like(ya), torch.randn_like(yd)
gm, = torch.autograd.grad((ym * rm).sum(), x)
ga, = torch.autograd.grad((ya * ra).sum(), x)
gd, = torch.autograd.grad((yd * rd).sum(), x)
cases["pool"] = {"x": t(x), "max": t(ym), "avg": t(ya), "adaptive": t(yd), "rm": t(rm), "ra": t(ra), "rd": t(rd),
                 "dmax": t(gm), "davg": t(ga), "dadaptive": t(gd)}

# activations
x = (torch.randn(64) * 4).requires_grad_(True)
for name, f in (("hardswish", F.hardswish), ("relu6", F.relu6)):
    y = f(x)
    g, = torch.autograd.grad(y.sum(), x)
    cases[name] = {"x": t(x), "y": t(y), "dx": t(g)}

# conv+bn / linear+bn folding (bit exact)
conv = nn.Conv2d(3, 5, 3, bias=True).eval()
bn = nn.BatchNorm2d(5).eval()
with torch.no_grad():
    bn.weight.copy_(torch.randn(5)); bn.bias.copy_(torch.randn(5))
    bn.running_mean.copy_(torch.randn(5)); bn.running_var.copy_(torch.rand(5) + 0.5)
fused = torch.ao.quantization.fuse_modules(nn.Sequential(conv, bn), [["0", "1"]])
cases["fuse_conv_bn"] = {"w": t(conv.weight), "b": t(conv.bias), "gamma": t(bn.weight), "beta": t(bn.bias),
                         "mean": t(bn.running_mean), "var": t(bn.running_var),
                         "fw": t(fused[0].weight), "fb": t(fused[0].bias)}
lin = nn.Linear(6, 4).eval()
bn1 = nn.BatchNorm1d(4).eval()
with torch.no_grad():
    bn1.weight.copy_(torch.randn(4)); bn1.bias.copy_(torch.randn(4))
    bn1.running_mean.copy_(torch.randn(4)); bn1.running_var.copy_(torch.rand(4) + 0.5)
fl = torch.ao.quantization.fuse_modules(nn.Sequential(lin, bn1), [["0", "1"]])
cases["fuse_linear_bn"] = {"w": t(lin.weight), "b": t(lin.bias), "gamma": t(bn1.weight), "beta": t(bn1.bias),
                           "mean": t(bn1.running_mean), "var": t(bn1.running_var),
                           "fw": t(fl[0].weight), "fb": t(fl[0].bias)}

# cross entropy
z = torch.randn(4, 5, requires_grad=True)
lab = torch.tensor([0, 3, 4, 1])
loss = F.cross_entropy(z, lab)
g, = torch.autograd.grad(loss, z)
cases["cross_entropy"] = {"z": t(z), "labels": lab.tolist(), "loss": loss.item(), "dz": t(g)}

# optimizers: 3 steps with fixed grads
p0 = torch.randn(6)
grads = [torch.randn(6) for _ in range(3)]
res = {}
for name, mk in (("sgd", lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9)),
                 ("adam", lambda p: torch.optim.Adam([p], lr=0.01))):
    p = p0.clone().requires_grad_(True)
    opt = mk(p)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    res[name] = t(p)
cases["optim"] = {"p0": t(p0), "grads": [t(g) for g in grads], **res}

# LSTM / GRU, 2 layers, batch_first
x = torch.randn(2, 4, 3)
for name, cls in (("lstm", nn.LSTM), ("gru", nn.GRU)):
    m = cls(3, 5, num_layers=2, batch_first=True)
    out, h = m(x)
    cases[name] = {"x": t(x), "params": {k: t(v) for k, v in m.state_dict().items()}, "out": t(out)}

# QAT ConvBnReLU2d (x86 QAT qconfig: fused moving-average fake quants), one training step
torch.backends.quantized.engine = "x86"
m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
with torch.no_grad():
    m[1].weight.copy_(torch.rand(4) + 0.5); m[1].bias.copy_(torch.randn(4) * 0.1)
    m[1].running_mean.copy_(torch.randn(4) * 0.1); m[1].running_var.copy_(torch.rand(4) + 0.5)
init = {"w": t(m[0].weight), "b": t(m[0].bias), "gamma": t(m[1].weight), "beta": t(m[1].bias),
        "mean": t(m[1].running_mean), "var": t(m[1].running_var)}
m.train()
tq = torch.ao.quantization
mq = tq.fuse_modules_qat(m, [["0", "1", "2"]])
mq.qconfig = tq.get_default_qat_qconfig("x86")
tq.prepare_qat(mq, inplace=True)
x = torch.randn(3, 2, 6, 6, requires_grad=True)
y = mq(x)
r = torch.randn_like(y)
(y * r).sum().backward()
c = mq[0]
cases["qat_convbnrelu"] = {**init, "x": t(x), "y": t(y), "r": t(r), "dx": t(x.grad), "dw": t(c.weight.grad),
                           "db": t(c.bias.grad), "dgamma": t(c.bn.weight.grad), "dbeta": t(c.bn.bias.grad),
                           "running_mean": t(c.bn.running_mean), "running_var": t(c.bn.running_var)}

# dynamic quantized LSTM / GRU
x = torch.randn(2, 5, 4)
for name, cls in (("dyn_lstm", nn.LSTM), ("dyn_gru", nn.GRU)):
    f = cls(4, 6, num_layers=2, batch_first=True)
    q = tq.quantize_dynamic(nn.Sequential(f), {cls}, dtype=torch.qint8)
    with torch.no_grad():
        out, _ = q(x) if False else q[0](x)
    cases[name] = {"x": t(x), "params": {k: t(v) for k, v in f.state_dict().items()}, "out": t(out)}

print(json.dumps(cases))
