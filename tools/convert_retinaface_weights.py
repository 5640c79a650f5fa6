#!/usr/bin/env python
"""Convert an official RetinaFace checkpoint (biubug6/Pytorch_Retinaface
``mobilenet0.25_Final.pth`` or ``Resnet50_Final.pth``, with or without DataParallel's
``module.`` prefix) to a D2 checkpoint for d2ext's ``RetinaFace``.

    python tools/convert_retinaface_weights.py mobilenet0.25_Final.pth retinaface_mnet025.pth

Prints the config to use: ``configs/RetinaFace/retinaface_mnet025_640.yaml`` or
``retinaface_R_50_840.yaml`` (BGR minus (104, 117, 123), as the original). The ImageNet
MobileNet-0.25 the original trains from (``mobilenetV1X0.25_pretrain.tar``) converts the same
way, to the backbone only: ``MODEL.WEIGHTS`` of a training run (the paper recipe); for the
R-50 recipe, D2's ``convert-torchvision-to-d2.py`` converts torchvision's ImageNet ResNet-50. The output is
``{"model": state_dict, "__author__": ..., "matching_heuristics": False}`` (D2's
DetectionCheckpointer format, exact key names).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from d2ext.modeling.retinaface import (  # noqa: E402
    convert_official_retinaface_state_dict,
    infer_official_retinaface_backbone,
)
from d2ext.utils.checkpoint_conversion import (  # noqa: E402
    load_official_state_dict,
    save_converted_checkpoint,
)

CONFIGS = {
    "mobilenet0.25": "configs/RetinaFace/retinaface_mnet025_640.yaml",
    "mobilenet0.25-imagenet": "configs/RetinaFace/retinaface_mnet025_640.yaml",
    "resnet50": "configs/RetinaFace/retinaface_R_50_840.yaml",
}


def convert_file(src: str, dst: str) -> str:
    """Convert ``src`` to ``dst``; returns the config file to use it with."""
    state_dict = load_official_state_dict(src, "official RetinaFace")
    try:
        backbone = infer_official_retinaface_backbone(state_dict)
    except ValueError as e:
        raise ValueError(f"{src!r}: {e}") from None
    model, _ = convert_official_retinaface_state_dict(state_dict)
    save_converted_checkpoint(dst, model, "biubug6/Pytorch_Retinaface")
    return CONFIGS[backbone]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="official checkpoint, e.g. mobilenet0.25_Final.pth")
    parser.add_argument("dst", help="output D2 checkpoint (.pth)")
    args = parser.parse_args(argv)
    config = convert_file(args.src, args.dst)
    print(f"wrote {args.dst}; use with: --config-file {config} MODEL.WEIGHTS {args.dst}")


if __name__ == "__main__":
    main()
