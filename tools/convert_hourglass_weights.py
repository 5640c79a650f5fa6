#!/usr/bin/env python
"""Convert an official Stacked Hourglass checkpoint (princeton-vl/pytorch_stacked_hourglass,
``exp/<name>/checkpoint.pt``) to a D2 checkpoint for d2ext's ``StackedHourglass`` backbone.

    python tools/convert_hourglass_weights.py exp/pretrained/checkpoint.pt hourglass_8x256.pth

The network's sizes are read from the checkpoint and printed as the ``MODEL.HOURGLASS`` keys to
use (the official release: 8 stacks of width 256, 16 MPII joints, depth 4). The official weights
expect RGB in [0, 1]: ``INPUT.FORMAT RGB MODEL.PIXEL_MEAN [0,0,0] MODEL.PIXEL_STD [255,255,255]``.
Keys get the ``--prefix`` (default ``backbone.``: the backbone of a D2 model). The output is
``{"model": state_dict, "__author__": ..., "matching_heuristics": False}`` (D2's
DetectionCheckpointer format, exact key names).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from d2ext.modeling.hourglass.checkpoint import (  # noqa: E402
    convert_official_hourglass_state_dict,
    infer_official_hourglass_config,
)


def load_official_state_dict(src: str) -> dict:
    """The ``PoseNet`` state dict inside ``src``: the original's ``{"state_dict": ...}``, a
    ``{"net"|"model": ...}`` wrapper, or a bare state dict."""
    if not os.path.isfile(src):
        raise FileNotFoundError(f"official hourglass checkpoint {src!r} does not exist")
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    for key in ("state_dict", "net", "model"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict) or not ckpt or not all(torch.is_tensor(v) for v in ckpt.values()):
        raise ValueError(f"{src!r} is not a PoseNet state dict (expected a dict of tensors)")
    return ckpt


def convert_file(src: str, dst: str, prefix: str = "backbone.") -> dict:
    """Convert ``src`` to ``dst``; returns the ``MODEL.HOURGLASS`` settings it was trained with."""
    state_dict = load_official_state_dict(src)
    settings = infer_official_hourglass_config(state_dict)
    model, _ = convert_official_hourglass_state_dict(state_dict, prefix=prefix)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    author = "princeton-vl/pytorch_stacked_hourglass"
    torch.save({"model": model, "__author__": author, "matching_heuristics": False}, dst)
    return settings


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="official checkpoint, e.g. exp/pretrained/checkpoint.pt")
    parser.add_argument("dst", help="output D2 checkpoint (.pth)")
    parser.add_argument("--prefix", default="backbone.", help="prefix of every output key")
    args = parser.parse_args(argv)
    settings = convert_file(args.src, args.dst, prefix=args.prefix)
    opts = " ".join(f"MODEL.HOURGLASS.{k.upper()} {v}" for k, v in settings.items())
    print(f"wrote {args.dst}; use with: {opts}")


if __name__ == "__main__":
    main()
