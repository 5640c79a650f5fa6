#!/usr/bin/env python
"""Convert a D2 ``projects/DensePose`` chart checkpoint (``densepose_rcnn_R_50_FPN_s1x``
``model_final_*.pkl`` from its model zoo: a pickle of numpy arrays, or a ``.pth`` of tensors;
either one ``{"model": state_dict, ...}`` or a bare state dict) to a D2 checkpoint for d2ext's
``DensePoseROIHeads``.

    python tools/convert_densepose_weights.py model_final_162be9.pkl densepose_R_50_FPN_s1x.pth

Our module names are the original's (``d2ext/modeling/densepose/checkpoint.py``), so the keys
stay as they are; the converter validates them (an unknown key is named), turns arrays into
tensors, strips ``module.`` and drops the confidence layers of checkpoints trained with
confidences on. The output is ``{"model": state_dict, "__author__": ...,
"matching_heuristics": False}`` (D2's DetectionCheckpointer format, exact key names).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from d2ext.modeling.densepose import convert_official_densepose_state_dict  # noqa: E402
from d2ext.utils.checkpoint_conversion import (  # noqa: E402
    load_official_state_dict,
    save_converted_checkpoint,
)


def convert_file(src: str, dst: str) -> list:
    """Convert ``src`` to ``dst``; returns the dropped (confidence) keys."""
    try:
        state_dict = load_official_state_dict(
            src, "DensePose", wrapper_keys=("model",), tensors_only=False
        )
        model, dropped = convert_official_densepose_state_dict(state_dict)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{src!r}: {e}") from None
    save_converted_checkpoint(dst, model, "facebookresearch/detectron2 projects/DensePose")
    return dropped


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="D2 DensePose checkpoint (.pkl or .pth)")
    parser.add_argument("dst", help="output D2 checkpoint (.pth)")
    args = parser.parse_args(argv)
    dropped = convert_file(args.src, args.dst)
    if dropped:
        print(f"dropped {len(dropped)} confidence-layer keys: {', '.join(dropped)}")
    print(
        f"wrote {args.dst}; use with MODEL.ROI_HEADS.NAME DensePoseROIHeads MODEL.WEIGHTS {args.dst}"
    )


if __name__ == "__main__":
    main()
