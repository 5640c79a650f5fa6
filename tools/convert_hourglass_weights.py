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

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from d2ext.modeling.hourglass.checkpoint import (  # noqa: E402
    convert_official_hourglass_state_dict,
    infer_official_hourglass_config,
)
from d2ext.utils.checkpoint_conversion import (  # noqa: E402
    load_official_state_dict,
    save_converted_checkpoint,
)


def convert_file(src: str, dst: str, prefix: str = "backbone.") -> dict:
    """Convert ``src`` to ``dst``; returns the ``MODEL.HOURGLASS`` settings it was trained with."""
    state_dict = load_official_state_dict(
        src, "official hourglass (PoseNet)", wrapper_keys=("state_dict", "net", "model")
    )
    settings = infer_official_hourglass_config(state_dict)
    model, _ = convert_official_hourglass_state_dict(state_dict, prefix=prefix)
    save_converted_checkpoint(dst, model, "princeton-vl/pytorch_stacked_hourglass")
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
