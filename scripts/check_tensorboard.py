#!/usr/bin/env python3
"""Reads a run's TensorBoard event file with TensorBoard itself and compares it with the CSVs.

    pip install tensorboard
    python3 scripts/check_tensorboard.py runs/cifar10 [--serve]

1. TensorBoard's Python loader (EventAccumulator): every epoch of metrics.csv and every step
   of steps.csv must appear with its value (float32 of the CSV's number).
2. With --serve: starts `tensorboard --logdir <parent of run>` (its Rust data server where
   the platform has one) and asks its HTTP API for the test-accuracy curve, as the web page
   does.
Prints what it compared and exits non-zero on the first difference.
"""
import csv
import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def close(a, b):
    # The CSVs round to 6 decimals (or 7 significant digits); the event file holds float32.
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def check_loader(run: Path) -> int:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    print(f"{run}: {len(tags)} scalar tags: {', '.join(sorted(tags))}")
    compared = 0

    def expect(tag, rows, step_field, value_field):
        nonlocal compared
        got = {e.step: e.value for e in acc.Scalars(tag)}
        want = {int(r[step_field]): float(r[value_field]) for r in rows}
        if set(got) != set(want):
            sys.exit(f"{tag}: steps {sorted(got)} in the event file, {sorted(want)} in the CSV")
        for step, value in want.items():
            if not close(got[step], value):
                sys.exit(f"{tag} at step {step}: {got[step]} in the event file, {value} in the CSV")
        compared += len(want)

    epochs = list(csv.DictReader(open(run / "metrics.csv")))
    for tag, field in [
        ("loss/train", "train_loss"),
        ("loss/test", "test_loss"),
        ("accuracy/train", "train_accuracy"),
        ("accuracy/test", "test_accuracy"),
        ("optimizer/lr", "lr"),
        ("epoch", "epoch"),
    ]:
        expect(tag, epochs, "step", field)
    if (run / "steps.csv").exists():
        steps = list(csv.DictReader(open(run / "steps.csv")))
        for tag, field in [
            ("loss/train_batch", "loss"),
            ("hessian_free/damping", "damping_used"),
            ("hessian_free/cg_iterations", "cg_iterations"),
            ("hessian_free/rho", "rho"),
            ("hessian_free/step_size", "step_size"),
        ]:
            expect(tag, steps, "step", field)
    print(f"EventAccumulator: {compared} values equal to the CSVs")
    return compared


def check_server(run: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["tensorboard", "--logdir", str(run.parent), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run={run.name}&tag=accuracy/test"
        deadline = time.time() + 120
        while True:
            try:
                points = json.load(urllib.request.urlopen(url, timeout=5))
                if points:
                    break
            except Exception as e:  # not up yet, or the run not loaded yet
                last = e
            if time.time() > deadline:
                sys.exit(f"tensorboard served nothing for {url}: {last}")
            time.sleep(1)
        epochs = list(csv.DictReader(open(run / "metrics.csv")))
        served = [(p[1], p[2]) for p in points]
        want = [(int(r["step"]), float(r["test_accuracy"])) for r in epochs]
        if len(served) != len(want) or not all(s == w[0] and close(v, w[1]) for (s, v), w in zip(served, want)):
            sys.exit(f"tensorboard's server: {served}, metrics.csv: {want}")
        print(f"tensorboard server: accuracy/test of run {run.name!r} served with its {len(served)} epochs")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    run = Path(sys.argv[1]).resolve()
    check_loader(run)
    if "--serve" in sys.argv:
        check_server(run)
