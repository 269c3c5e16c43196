#!/usr/bin/env python3
"""PyTorch beside hftrain on the same GPU, for BENCHMARKS.md.

Trains the network of an hftrain SGD config (its `[[model.stages]]` of layer lines, residual
blocks, then the classifier and the logit scale, under hftrain's parameter names) with the
same recipe: SGD with Nesterov
momentum, weight decay on convolution and linear weights only, hftrain's one-cycle schedule
per step, label smoothing, batch norm momentum, random crop with zero padding and flips,
incomplete last batch dropped. Writes one CSV row per epoch (the columns of hftrain's
metrics.csv). With --curvature N it instead times one gradient and one Hessian-vector
product (double backprop) on N test images, and their peak GPU memory.

    python3 scripts/torch_reference.py --config configs/cifar10-sgd.toml --data DIR \
        --epochs 18 --csv torch.csv [--tf32]
    python3 scripts/torch_reference.py --config configs/cifar10-sgd.toml --data DIR --curvature 64
    python3 scripts/torch_reference.py --config configs/cifar10-resnet9-sgd.toml --list-parameters

--list-parameters prints the parameters and buffers the config's network has (name and shape,
as hftrain's checkpoints and `hftrain curvature` files name them) and needs no PyTorch; the
tests compare it with hftrain's own layout.
"""
import argparse
import csv
import os
import statistics
import time
import tomllib

try:  # --list-parameters needs none of these
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from PIL import Image
except ImportError:
    torch = None

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_split(root, split):
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        folder = os.path.join(root, split, name)
        for file in sorted(os.listdir(folder)):
            images.append(np.asarray(Image.open(os.path.join(folder, file)).convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels)


def parse_line(line):
    """"conv 64 kernel=3" -> ("conv", "64", {"kernel": "3"}), as hftrain's src/model/spec.rs."""
    words = line.split()
    value = words[1] if len(words) > 1 and "=" not in words[1] else None
    options = dict(w.split("=", 1) for w in words[1 + (value is not None):])
    return words[0], value, options


def plan_layers(lines, shape):
    """Each line's layer as a dict (kind, settings, params and buffers with shapes), and the
    output shape (channels, height, width), following hftrain's layers (src/model/layers/)."""
    layers = []
    for i, line in enumerate(lines):
        kind, value, options = parse_line(line)
        c, h, w = shape
        layer = {"kind": kind, "params": [], "buffers": []}
        if kind == "conv":
            out, k = int(value), int(options.get("kernel", 3))
            stride = int(options.get("stride", 1))
            pad = options.get("padding", "same")
            pad = k // 2 if pad == "same" else 0 if pad == "none" else int(pad)
            next_kind = lines[i + 1].split()[0] if i + 1 < len(lines) else None
            bias = options.get("bias", "false" if next_kind == "batch-norm" else "true") == "true"
            layer.update(cin=c, out=out, kernel=k, stride=stride, padding=pad, bias=bias)
            layer["params"] = [("weight", [out, c, k, k])] + ([("bias", [out])] if bias else [])
            side = lambda s: (s + 2 * pad - k) // stride + 1
            shape = (out, side(h), side(w))
        elif kind == "batch-norm":
            layer.update(channels=c)
            layer["params"] = [("weight", [c]), ("bias", [c])]
            layer["buffers"] = [("running_mean", [c]), ("running_var", [c])]
        elif kind in ("max-pool", "avg-pool"):
            k = int(value or 2)
            layer.update(kernel=k)
            shape = (c, h // k, w // k)
        elif kind in ("global-max-pool", "global-avg-pool"):
            shape = (c, 1, 1)
        elif kind == "flatten":
            shape = (c * h * w, 1, 1)
        elif kind == "linear":
            out, bias = int(value), options.get("bias", "true") == "true"
            layer.update(cin=c, out=out, bias=bias)
            layer["params"] = [("weight", [out, c])] + ([("bias", [out])] if bias else [])
            shape = (out, 1, 1)
        elif kind == "scale":
            layer.update(factor=float(value))
        elif kind not in ("relu", "gelu"):
            raise SystemExit(f"layer {line!r}: unknown to this script")
        layers.append(layer)
    return layers, shape


def plan_network(model, classes=10):
    """The stages of the config, each with its layers, residual branch and shortcut (a 1x1
    convolution where the branch changes the shape), then the classifier."""
    shape, stages = (3, 32, 32), []
    for stage in model.get("stages", []):
        layers, shape = plan_layers(stage.get("layers", []), shape)
        residual, shortcut = [], None
        if stage.get("residual"):
            residual, out = plan_layers(stage["residual"], shape)
            if out != shape:
                stride = -(-shape[1] // out[1])  # ceil, as hftrain's residual.rs
                shortcut = {"kind": "conv", "cin": shape[0], "out": out[0], "kernel": 1,
                            "stride": stride, "padding": 0, "bias": True,
                            "params": [("weight", [out[0], shape[0], 1, 1]), ("bias", [out[0]])],
                            "buffers": []}
            shape = out
        stages.append({"layers": layers, "residual": residual, "shortcut": shortcut})
    classifier = {"kind": "linear", "cin": shape[0], "out": classes, "bias": True,
                  "params": [("weight", [classes, shape[0]]), ("bias", [classes])], "buffers": []}
    return stages, classifier


def list_parameters(model):
    """(kind, name, shape) of every parameter and buffer, in hftrain's layout order."""
    stages, classifier = plan_network(model)
    rows = []

    def add(prefix, layer):
        for kind in ("params", "buffers"):
            for name, shape in layer[kind]:
                rows.append((kind[:-1], f"{prefix}.{name}", shape))

    for s, stage in enumerate(stages):
        for i, layer in enumerate(stage["layers"]):
            add(f"stages.{s}.layers.{i}", layer)
        for i, layer in enumerate(stage["residual"]):
            add(f"stages.{s}.residual.{i}", layer)
        if stage["shortcut"]:
            add(f"stages.{s}.shortcut", stage["shortcut"])
    add("classifier", classifier)
    # hftrain keeps parameters and buffers in two layouts: parameters first.
    return [r for r in rows if r[0] == "param"] + [r for r in rows if r[0] == "buffer"]


if torch is not None:
    class Linear4d(nn.Linear):
        """hftrain keeps a vector of features as an [n, f, 1, 1] map."""
        def forward(self, x):
            return super().forward(x.flatten(1))[:, :, None, None]

    class Flatten4d(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :, None, None]

    class Scale(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    def torch_layer(layer, bn_momentum):
        kind = layer["kind"]
        if kind == "conv":
            return nn.Conv2d(layer["cin"], layer["out"], layer["kernel"], stride=layer["stride"],
                             padding=layer["padding"], bias=layer["bias"])
        if kind == "linear":
            return Linear4d(layer["cin"], layer["out"], bias=layer["bias"])
        return {
            "batch-norm": lambda: nn.BatchNorm2d(layer.get("channels", 0), momentum=bn_momentum),
            "relu": nn.ReLU,
            "gelu": nn.GELU,
            "max-pool": lambda: nn.MaxPool2d(layer.get("kernel", 2)),
            "avg-pool": lambda: nn.AvgPool2d(layer.get("kernel", 2)),
            "global-max-pool": lambda: nn.AdaptiveMaxPool2d(1),
            "global-avg-pool": lambda: nn.AdaptiveAvgPool2d(1),
            "flatten": Flatten4d,
            "scale": lambda: Scale(layer.get("factor", 1.0)),
        }[kind]()

    class Stage(nn.Module):
        def __init__(self, stage, bn_momentum):
            super().__init__()
            self.layers = nn.Sequential(*[torch_layer(l, bn_momentum) for l in stage["layers"]])
            self.residual = (nn.Sequential(*[torch_layer(l, bn_momentum) for l in stage["residual"]])
                             if stage["residual"] else None)
            self.shortcut = torch_layer(stage["shortcut"], bn_momentum) if stage["shortcut"] else None

        def forward(self, x):
            x = self.layers(x)
            if self.residual is None:
                return x
            return (self.shortcut(x) if self.shortcut is not None else x) + self.residual(x)

    class Net(nn.Module):
        def __init__(self, model, bn_momentum):
            super().__init__()
            stages, classifier = plan_network(model)
            self.stages = nn.ModuleList([Stage(s, bn_momentum) for s in stages])
            self.classifier = torch_layer(classifier, bn_momentum)
            self.scale = model.get("logit_scale", 1.0)

        def forward(self, x):
            for stage in self.stages:
                x = stage(x)
            return self.classifier(x).flatten(1) * self.scale


def one_cycle(step, peak, warmup_steps, total_steps, initial_fraction, final_fraction):
    """hftrain's schedule (src/optim/schedule.rs), one-cycle kind."""
    if step < warmup_steps:
        t = (step + 1) / warmup_steps
        return peak * (initial_fraction + (1 - initial_fraction) * t)
    t = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return peak * (final_fraction + (1 - final_fraction) * (1 - t))


def augment(x, pad, generator):
    n = x.shape[0]
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(32, device=x.device)[None, :])
    cols = (dx[:, None] + torch.arange(32, device=x.device)[None, :])
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(3, device=x.device)[None, :, None, None]
    out = padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def spectrum(model, x, y, smoothing, trace_samples, device, max_iterations=100, tolerance=1e-3):
    """PyHessian's hessian.eigenvalues(top_n=1) and hessian.trace() on one batch, as that
    library computes them: one forward and backward with create_graph, then each product a
    second backward through that graph (retained); power iteration to a relative change of
    `tolerance`; Hutchinson with Rademacher vectors (a fixed count, as `hftrain spectrum`)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    products = 0

    def hv(v):
        nonlocal products
        products += 1
        return torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)

    def dot(a, b):
        return sum((ai * bi).sum() for ai, bi in zip(a, b)).item()

    def normalised(v):
        norm = dot(v, v) ** 0.5
        return [vi / (norm + 1e-6) for vi in v]

    v = normalised([torch.randn_like(p) for p in params])
    eigenvalue = None
    for _ in range(max_iterations):
        hv_v = hv(v)
        value = dot(hv_v, v)
        v = normalised(hv_v)
        if eigenvalue is not None and abs(eigenvalue - value) / (abs(eigenvalue) + 1e-6) < tolerance:
            eigenvalue = value
            break
        eigenvalue = value
    top_products = products
    samples = []
    for _ in range(trace_samples):
        z = [torch.randint_like(p, high=2) * 2 - 1 for p in params]
        samples.append(dot(hv(z), z))
    sync()
    seconds = time.perf_counter() - start
    trace = statistics.mean(samples) if samples else float("nan")
    print(f"torch spectrum, batch {len(y)}, {sum(p.numel() for p in params)} parameters, "
          f"{torch.get_num_threads()} threads: top eigenvalue {eigenvalue:.5e} "
          f"({top_products} power-iteration products), trace {trace:.5e} ({len(samples)} samples); "
          f"{products} products in {seconds:.2f} s, {1000 * seconds / products:.1f} ms per product")


BENCH_QUANTITIES = ["forward", "evaluation", "gradient", "sgd_step", "gauss_newton_vector",
                    "hessian_vector", "cg_iteration"]


def bench(model, batch, smoothing, device, repeats, cg_iterations, curvature_batch):
    """The quantities of `hftrain bench` (src/bench.rs), under its names, on a batch of random
    images: each the median of `repeats` timed calls after one warm-up call."""
    import resource
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 3, 32, 32, generator=generator) * 4 - 2).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)
    params = [p for p in model.parameters()]
    v = [torch.rand_like(p) * 2 - 1 for p in params]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() > 1)]
    sgd = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=1e-3, momentum=0.9, nesterov=True)

    def forward():
        model.train()
        with torch.no_grad():
            F.cross_entropy(model(x), y, label_smoothing=smoothing).item()

    def evaluation():
        model.eval()
        with torch.no_grad():
            logits = model(x)
            F.cross_entropy(logits, y).item()
            (logits.argmax(1) == y).sum().item()
        model.train()

    def gradient():
        loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        return torch.autograd.grad(loss, params)

    def sgd_step():
        loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        sgd.zero_grad(set_to_none=True)
        loss.backward()
        sgd.step()

    def gauss_newton(xs, ys):
        """J^T H_L J v with the forward pass recorded once (CG's use): J v by the double-vjp
        trick, H_L of the mean softmax cross-entropy, then J^T."""
        logits = model(xs)
        probabilities = logits.detach().softmax(1)
        u = torch.zeros_like(logits, requires_grad=True)
        jt_u = torch.autograd.grad(logits, params, u, create_graph=True)

        def product(vector):
            jv = torch.autograd.grad(jt_u, u, vector, retain_graph=True)[0]
            hjv = (probabilities * jv - probabilities * (probabilities * jv).sum(1, keepdim=True)) / len(ys)
            return torch.autograd.grad(logits, params, hjv, retain_graph=True)
        return product

    def gauss_newton_vector():
        return gauss_newton(x, y)(v)

    def hessian_vector():
        loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        g = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((gi * vi).sum() for gi, vi in zip(g, v))
        return torch.autograd.grad(dot, params)

    def cg_iteration():
        """`cg_iterations` iterations of CG on (G + I) p = -g, on the first `curvature_batch`
        images, as hftrain's cg.rs (a scalar read per iteration)."""
        product = gauss_newton(x[:curvature_batch], y[:curvature_batch])
        b = [-gi for gi in gradient()]
        p_ = [torch.zeros_like(bi) for bi in b]
        r = [bi.clone() for bi in b]
        d = [ri.clone() for ri in r]
        rr = sum((ri * ri).sum() for ri in r).item()
        for _ in range(cg_iterations):
            ad = [a + di for a, di in zip(product(d), d)]
            alpha = rr / sum((di * a).sum() for di, a in zip(d, ad)).item()
            p_ = [pi + alpha * di for pi, di in zip(p_, d)]
            r = [ri - alpha * a for ri, a in zip(r, ad)]
            new_rr = sum((ri * ri).sum() for ri in r).item()
            d = [ri + (new_rr / rr) * di for ri, di in zip(r, d)]
            rr = new_rr
        return p_

    results = []
    for name, fn, per in [("forward", forward, 1), ("evaluation", evaluation, 1),
                          ("gradient", gradient, 1), ("sgd_step", sgd_step, 1),
                          ("gauss_newton_vector", gauss_newton_vector, 1),
                          ("hessian_vector", hessian_vector, 1),
                          ("cg_iteration", cg_iteration, cg_iterations)]:
        def call():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            return (time.perf_counter() - start) / per
        first = call()
        seconds = [call() for _ in range(repeats)]
        median = statistics.median(seconds)
        row = dict(name=name, median_seconds=median, seconds=seconds, first_call_seconds=first,
                   images_per_second=batch / median,
                   process_peak_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        if device.type == "cuda":
            row["device_reserved_bytes"] = torch.cuda.max_memory_reserved()
        results.append(row)
        print(f"torch {name:<20} {1000 * median:10.2f} ms {batch / median:10.1f} images/s "
              f"(first call {1000 * first:.2f} ms)", flush=True)
    return results


def bench_layers(model, batch, smoothing, device, repeats):
    """Each layer alone, as `hftrain bench --layers` times it (src/commands/bench.rs): its
    forward pass (with the graph a backward pass needs), its vjp on the loss's gradient (input
    and parameter gradients; no input gradient for the first layer), its jvp for a random
    parameter tangent (forward mode); medians of `repeats` passes after a warm-up pass. The
    rows follow hftrain's layer list: each stage's layers, a residual block as one row, the
    classifier, and the logit scale where it is not 1."""
    import copy
    generator = torch.Generator().manual_seed(1)
    x0 = (torch.rand(batch, 3, 32, 32, generator=generator) * 4 - 2).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    class Residual(nn.Module):
        def __init__(self, stage):
            super().__init__()
            self.residual, self.shortcut = stage.residual, stage.shortcut

        def forward(self, x):
            return (self.shortcut(x) if self.shortcut is not None else x) + self.residual(x)

    rows = []
    for stage in model.stages:
        rows += list(stage.layers)
        if stage.residual is not None:
            rows.append(Residual(stage))
    rows.append(model.classifier)
    if model.scale != 1.0:
        rows.append(Scale(model.scale))
    # Forward mode cannot update batch norm's running statistics in place, so the jvp runs on
    # a copy that normalises by the batch's statistics alone (the same arithmetic).
    def without_running_stats(module):
        module = copy.deepcopy(module)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.track_running_stats, m.running_mean, m.running_var = False, None, None
        return module
    jvp_rows = [without_running_stats(m) for m in rows]
    tangents = [{n: torch.rand_like(p) * 2 - 1 for n, p in m.named_parameters()} for m in rows]

    def timed(fn):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - start

    seconds = [[[], [], []] for _ in rows]
    for rep in range(repeats + 1):
        keep = rep > 0
        x, inputs, outputs = x0, [], []
        for i, m in enumerate(rows):
            x = x.detach().requires_grad_(i > 0)
            inputs.append(x)
            out, s = timed(lambda: m(x))
            outputs.append(out)
            if keep:
                seconds[i][0].append(s)
            x = out
        logits = x.detach().flatten(1).requires_grad_(True)
        dy = torch.autograd.grad(F.cross_entropy(logits, y, label_smoothing=smoothing), logits)[0]
        dy = dy.view_as(x)
        for i in reversed(range(len(rows))):
            wrt = ([inputs[i]] if i > 0 else []) + list(rows[i].parameters())
            grads, s = timed(lambda: torch.autograd.grad(outputs[i], wrt, dy))
            if keep:
                seconds[i][1].append(s)
            if i > 0:
                dy = grads[0]
        dx = torch.zeros_like(x0)
        for i, m in enumerate(jvp_rows):
            params = dict(m.named_parameters())
            names = list(params)

            def call(x, *values):
                return torch.func.functional_call(m, dict(zip(names, values)), (x,))
            primals = (inputs[i].detach(), *[params[n].detach() for n in names])
            directions = (dx, *[tangents[i][n] for n in names])
            (_, dx), s = timed(lambda: torch.func.jvp(call, primals, directions))
            if keep:
                seconds[i][2].append(s)
    results = []
    total = sum(statistics.median(f) + statistics.median(v) for f, v, _ in seconds)
    print(f"\ntorch: each layer alone (medians; share: of forward + vjp over all layers, "
          f"{1000 * total:.2f} ms)")
    print(f"{'#':>3} {'layer':<40} {'forward':>11} {'vjp':>11} {'jvp':>11} {'share':>6}")
    for i, (m, (f, v, j)) in enumerate(zip(rows, seconds)):
        f, v, j = (statistics.median(t) for t in (f, v, j))
        name = describe_module(m)
        results.append(dict(layer=name, forward_seconds=f, vjp_seconds=v, jvp_seconds=j))
        print(f"{i:>3} {name[:40]:<40} {1000 * f:8.2f} ms {1000 * v:8.2f} ms {1000 * j:8.2f} ms "
              f"{100 * (f + v) / total:5.1f}%", flush=True)
    return results


def describe_module(m):
    """A short name for a layer's module, in hftrain's words where they are the same."""
    if isinstance(m, nn.Conv2d):
        return f"conv {m.kernel_size[0]}x{m.kernel_size[1]} {m.in_channels} -> {m.out_channels}"
    if isinstance(m, nn.Linear):
        return f"linear {m.in_features} -> {m.out_features}"
    if isinstance(m, nn.BatchNorm2d):
        return f"batch norm {m.num_features}"
    if isinstance(m, Scale):
        return f"scale x{m.factor}"
    if hasattr(m, "residual"):
        return "x + (" + " | ".join(describe_module(r) for r in m.residual) + ")"
    return type(m).__name__.lower()


def beside(ours, theirs):
    """The side-by-side table: hftrain's JSON (`hftrain bench --json`) and PyTorch's."""
    torch_rows = {r["name"]: r for r in theirs["measurements"]}
    print(f"\nhftrain ({ours['device']}) beside PyTorch {theirs['torch']} ({theirs['device']}, "
          f"{theirs['threads']} threads), batch {ours['batch']}, medians:")
    print(f"{'quantity':<20} {'hftrain':>12} {'PyTorch':>12} {'ratio':>8}")
    for row in ours["measurements"]:
        peer = torch_rows.get(row["name"]) or torch_rows.get(
            "gradient" if row["name"].startswith("gradient_") else "")
        theirs_ms = f"{1000 * peer['median_seconds']:.2f} ms" if peer else "-"
        ratio = f"{row['median_seconds'] / peer['median_seconds']:.2f} x" if peer else "-"
        print(f"{row['name']:<20} {1000 * row['median_seconds']:9.2f} ms {theirs_ms:>12} {ratio:>8}")
    print("(ratio: hftrain's time over PyTorch's; below 1 hftrain is faster)")


def run_bench(args):
    import json
    import platform
    cfg = tomllib.load(open(args.config, "rb"))
    device = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.get("seed", 0))
    model = Net(cfg["model"], cfg.get("train", {}).get("bn_momentum", 0.1)).to(device)
    hf = cfg.get("optimizer", {}).get("hessian_free", {})
    curvature_batch = min(args.curvature_batch or hf.get("curvature_batch_size", 128), args.bench)
    rows = bench(model, args.bench, cfg.get("train", {}).get("label_smoothing", 0.0), device,
                 args.repeats, args.cg_iterations, curvature_batch)
    layers = (bench_layers(model, args.bench, cfg.get("train", {}).get("label_smoothing", 0.0),
                           device, args.repeats) if args.layers else None)
    report = dict(config=args.config, torch=torch.__version__, batch=args.bench,
                  curvature_batch=curvature_batch, repeats=args.repeats, tf32=args.tf32,
                  threads=torch.get_num_threads(),
                  device=torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
                  measurements=rows, layers=layers)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.beside:
        beside(json.load(open(args.beside)), report)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--data")
    parser.add_argument("--list-parameters", action="store_true",
                        help="print the network's parameters and buffers (name, shape); no PyTorch needed")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--csv")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 (PyTorch's default for convolutions)")
    parser.add_argument("--curvature", type=int, default=0)
    parser.add_argument("--spectrum", type=int, default=0,
                        help="PyHessian's way on this many test images: the Hessian's top eigenvalue "
                             "by power iteration and its trace by Hutchinson; prints products and seconds")
    parser.add_argument("--trace-samples", type=int, default=50)
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--bench", type=int, default=0, metavar="BATCH",
                        help="time hftrain bench's quantities on a batch of BATCH random images (no --data)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cg-iterations", type=int, default=10)
    parser.add_argument("--curvature-batch", type=int, default=0,
                        help="images of the CG iterations' products [default: the config's, else the batch]")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads [default: all cores]")
    parser.add_argument("--layers", action="store_true",
                        help="with --bench: also time each layer alone (forward, vjp, jvp), as "
                             "`hftrain bench --layers`")
    parser.add_argument("--json", help="with --bench: write the results here")
    parser.add_argument("--beside", help="with --bench: hftrain bench's JSON, printed side by side")
    args = parser.parse_args()
    if args.list_parameters:
        cfg = tomllib.load(open(args.config, "rb"))
        for kind, name, shape in list_parameters(cfg.get("model", {})):
            print(kind, name, "x".join(map(str, shape)))
        return
    if torch is None:
        raise SystemExit("training, --curvature, --spectrum and --bench need PyTorch, numpy and Pillow")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bench:
        run_bench(args)
        return
    if not args.data:
        raise SystemExit("training, --curvature and --spectrum need --data DIR")
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    cfg = tomllib.load(open(args.config, "rb"))
    data, train = cfg["data"], cfg["train"]
    device = torch.device(args.device)
    torch.manual_seed(cfg.get("seed", 0))
    mean = torch.tensor(data["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(data["std"], device=device).view(1, 3, 1, 1)
    normalise = lambda x: (x.float() / 255 - mean) / std
    model = Net(cfg["model"], train.get("bn_momentum", 0.1)).to(device)
    smoothing = train.get("label_smoothing", 0.0)
    t0 = time.perf_counter()
    test_x, test_y = load_split(args.data, "test")
    test_x, test_y = test_x.to(device), test_y.to(device)

    if args.spectrum:
        spectrum(model, normalise(test_x[: args.spectrum]), test_y[: args.spectrum], smoothing,
                 args.trace_samples, device)
        return

    if args.curvature:
        x, y = normalise(test_x[: args.curvature]), test_y[: args.curvature]
        params = [p for p in model.parameters()]
        v = [torch.rand_like(p) * 2 - 1 for p in params]

        def gradient():
            loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
            return torch.autograd.grad(loss, params)

        def hessian_vector():
            loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
            g = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((gi * vi).sum() for gi, vi in zip(g, v))
            return torch.autograd.grad(dot, params)

        for name, fn in [("gradient", gradient), ("Hessian-vector", hessian_vector)]:
            fn()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            times = []
            for _ in range(20):
                start = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            print(f"torch {name:<15} batch {args.curvature}: median {1000 * statistics.median(times):8.2f} ms, "
                  f"peak above parameters {peak:8.1f} MiB (tf32 {args.tf32})")
        return

    train_x, train_y = load_split(args.data, "train")
    train_x, train_y = train_x.to(device), train_y.to(device)
    print(f"loaded {len(train_y)} + {len(test_y)} images in {time.perf_counter() - t0:.1f} s")
    opt_cfg, sched = cfg["optimizer"], cfg["schedule"]
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() > 1)]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": opt_cfg["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=opt_cfg["lr"], momentum=opt_cfg["momentum"], nesterov=opt_cfg["nesterov"])
    epochs = args.epochs or train["epochs"]
    batch = train["batch_size"]
    steps_per_epoch = len(train_y) // batch
    total = steps_per_epoch * train["epochs"]
    warmup = round(sched["warmup_epochs"] * steps_per_epoch)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.get("seed", 0))
    rows, step = [], 0
    for epoch in range(1, epochs + 1):
        model.train()
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(len(train_y), device=device, generator=generator)
        loss_sum = correct = seen = 0
        for i in range(steps_per_epoch):
            index = order[i * batch:(i + 1) * batch]
            x = normalise(augment(train_x[index], data["crop_padding"], generator))
            y = train_y[index]
            lr = one_cycle(step, opt_cfg["lr"], warmup, total, sched["initial_lr_fraction"], sched["final_lr_fraction"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            step += 1
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        model.eval()
        test_loss = test_correct = 0
        with torch.no_grad():
            for i in range(0, len(test_y), train["eval_batch_size"]):
                x, y = normalise(test_x[i:i + train["eval_batch_size"]]), test_y[i:i + train["eval_batch_size"]]
                logits = model(x)
                test_loss += F.cross_entropy(logits, y, reduction="sum").item()
                test_correct += (logits.argmax(1) == y).sum().item()
        row = dict(epoch=epoch, step=step, lr=lr, train_loss=(loss_sum / seen).item(),
                   train_accuracy=(correct / seen).item(), test_loss=test_loss / len(test_y),
                   test_accuracy=test_correct / len(test_y), epoch_seconds=seconds,
                   images_per_second=seen / seconds)
        rows.append(row)
        print(f"epoch {epoch:3}/{epochs} train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f}% "
              f"test acc {100 * row['test_accuracy']:.2f}% {seconds:.1f}s {row['images_per_second']:.0f} img/s", flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
