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

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from d2ext.modeling.yolact_edge.checkpoint import (  # noqa: E402
    convert_official_yolact_edge_state_dict,
)
from d2ext.utils.checkpoint_conversion import (  # noqa: E402
    load_official_state_dict,
    save_converted_checkpoint,
)


def convert_file(src: str, dst: str) -> int:
    """Convert ``src`` to ``dst``; returns the number of tensors written."""
    ckpt = load_official_state_dict(src, "official YolactEdge", wrapper_keys=("state_dict",))
    model, _ = convert_official_yolact_edge_state_dict(ckpt)
    save_converted_checkpoint(dst, model, "haotian-liu/yolact_edge")
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
