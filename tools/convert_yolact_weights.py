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

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from d2ext.modeling.yolact.checkpoint import convert_official_yolact_state_dict  # noqa: E402
from d2ext.utils.checkpoint_conversion import (  # noqa: E402
    load_official_state_dict,
    save_converted_checkpoint,
)


def convert_file(src: str, dst: str) -> int:
    """Convert ``src`` to ``dst``; returns the number of tensors written."""
    ckpt = load_official_state_dict(src, "official YOLACT", wrapper_keys=("state_dict",))
    model, _ = convert_official_yolact_state_dict(ckpt)
    save_converted_checkpoint(dst, model, "dbolya/yolact")
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
