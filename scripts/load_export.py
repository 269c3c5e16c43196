#!/usr/bin/env python3
"""Rebuilds a network exported by `hftrain export` as a PyTorch module and classifies
pictures with it:

    python scripts/load_export.py model.safetensors photo.jpg [more.png ...]

In your own code:

    from load_export import load
    model, preprocess, classes = load("model.safetensors")   # model in eval mode
    probabilities = model(preprocess(pil_image)[None]).softmax(1)

The network is built from the `[model]` section in the file's metadata by the same code as
scripts/torch_reference.py, so the names of `model.state_dict()` are the file's.
`--check FILE` compares the logits on FILE's `images` with its `logits` (written by the test
suite) and prints the largest difference. Needs torch, safetensors and Pillow.
"""
import argparse
import json
import os
import sys
import tomllib

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import Net  # noqa: E402


def load(path):
    """(model in eval mode, preprocess: PIL image -> normalised 3x32x32 tensor, class names)."""
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    if meta.get("format") != "hftrain export v1":
        raise SystemExit(f"{path} is not an hftrain export (format {meta.get('format')!r})")
    model = Net(tomllib.loads(meta["model"]), 0.1)
    model.load_state_dict(load_file(path))
    model.eval()
    mean = torch.tensor(json.loads(meta["mean"])).view(3, 1, 1)
    std = torch.tensor(json.loads(meta["std"])).view(3, 1, 1)

    def preprocess(image):
        # As `hftrain predict`: the centred square, resized to 32x32 with a Lanczos filter.
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((32, 32), Image.LANCZOS)
        x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        x = x.view(32, 32, 3).permute(2, 0, 1).float() / 255
        return (x - mean) / std

    return model, preprocess, json.loads(meta["classes"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export")
    parser.add_argument("images", nargs="*")
    parser.add_argument("--check", help="a file with `images` and the `logits` hftrain gave")
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    model, preprocess, classes = load(args.export)
    with torch.no_grad():
        if args.check:
            reference = load_file(args.check)
            logits = model(reference["images"])
            difference = (logits - reference["logits"]).abs().max().item()
            print(f"max |logits - hftrain's| = {difference:.3e} over {logits.numel()} logits")
        for path in args.images:
            p = model(preprocess(Image.open(path))[None]).softmax(1)[0]
            top = p.topk(min(args.top, len(classes)))
            guesses = ", ".join(f"{classes[i]} {100 * v:.1f}%" for v, i in zip(top.values, top.indices))
            print(f"{path}: {guesses}")


if __name__ == "__main__":
    main()
