#!/usr/bin/env python
"""Convert an official YOLACT checkpoint (dbolya/yolact) to a D2 checkpoint for d2ext's YOLACT.

    python tools/convert_yolact_weights.py yolact_resnet50_54_800000.pth yolact_R_50.pth
    python tools/train_net.py --config-file configs/YOLACT/yolact_R_50_FPN_550.yaml \
        --eval-only MODEL.WEIGHTS yolact_R_50.pth

``yolact_resnet50_*`` -> ``configs/YOLACT/yolact_R_50_FPN_550.yaml``; ``yolact_base_*`` (R-101)
-> ``yolact_R_101_FPN_550.yaml``. The output is ``{"model": state_dict, "__author__": ...,
"matching_heuristics": False}`` (D2's DetectionCheckpointer format, exact key names).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from d2ext.modeling.yolact.checkpoint import convert_official_yolact_state_dict  # noqa: E402


def convert_file(src: str, dst: str) -> int:
    """Convert ``src`` to ``dst``; returns the number of tensors written."""
    if not os.path.isfile(src):
        raise FileNotFoundError(f"official YOLACT checkpoint {src!r} does not exist")
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if isinstance(ckpt, dict) and "state_dict" in ckpt and isinstance(ckpt["state_dict"], dict):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict) or not all(torch.is_tensor(v) for v in ckpt.values()):
        raise ValueError(f"{src!r} is not a YOLACT state dict (expected a dict of tensors)")
    model, _ = convert_official_yolact_state_dict(ckpt)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({"model": model, "__author__": "dbolya/yolact", "matching_heuristics": False}, dst)
    return len(model)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="official checkpoint, e.g. yolact_base_54_800000.pth")
    parser.add_argument("dst", help="output D2 checkpoint (.pth)")
    args = parser.parse_args(argv)
    n = convert_file(args.src, args.dst)
    print(f"wrote {n} tensors to {args.dst}")


if __name__ == "__main__":
    main()
