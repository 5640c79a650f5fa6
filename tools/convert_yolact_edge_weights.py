#!/usr/bin/env python
"""Convert an official YolactEdge checkpoint (haotian-liu/yolact_edge) to a D2 checkpoint for
d2ext's YolactEdge.

    python tools/convert_yolact_edge_weights.py yolact_edge_vid_resnet50_847_50000.pth \
        yolact_edge_vid_R_50.pth
    python tools/demo.py --config-file configs/YolactEdge/yolact_edge_R_50_FPN_550.yaml \
        --video in.mp4 --output out.mp4 MODEL.WEIGHTS yolact_edge_vid_R_50.pth

``yolact_edge_vid_resnet50_*`` (YouTube-VIS, flow net + SPA) ->
``configs/YolactEdge/yolact_edge_R_50_FPN_550.yaml``. Image checkpoints
(``yolact_edge_resnet50_*``, COCO) convert too, without the flow net and SPA (set
``MODEL.YOLACT.NUM_CLASSES 80``). The output is ``{"model": state_dict, "__author__": ...,
"matching_heuristics": False}`` (D2's DetectionCheckpointer format, exact key names).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from d2ext.modeling.yolact_edge.checkpoint import (  # noqa: E402
    convert_official_yolact_edge_state_dict,
)


def convert_file(src: str, dst: str) -> int:
    """Convert ``src`` to ``dst``; returns the number of tensors written."""
    if not os.path.isfile(src):
        raise FileNotFoundError(f"official YolactEdge checkpoint {src!r} does not exist")
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if isinstance(ckpt, dict) and "state_dict" in ckpt and isinstance(ckpt["state_dict"], dict):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict) or not all(torch.is_tensor(v) for v in ckpt.values()):
        raise ValueError(f"{src!r} is not a YolactEdge state dict (expected a dict of tensors)")
    model, _ = convert_official_yolact_edge_state_dict(ckpt)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    author = "haotian-liu/yolact_edge"
    torch.save({"model": model, "__author__": author, "matching_heuristics": False}, dst)
    return len(model)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="official checkpoint, e.g. yolact_edge_vid_resnet50_*.pth")
    parser.add_argument("dst", help="output D2 checkpoint (.pth)")
    args = parser.parse_args(argv)
    n = convert_file(args.src, args.dst)
    print(f"wrote {n} tensors to {args.dst}")


if __name__ == "__main__":
    main()
