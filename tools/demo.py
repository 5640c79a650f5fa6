#!/usr/bin/env python
"""Visualise a model's predictions with D2's Visualizer.

    python tools/demo.py --config-file configs/Base/mask_rcnn_R_18_FPN_synth.yaml \
        --input img1.jpg img2.jpg --output out/ MODEL.WEIGHTS output/model_final.pth
    python tools/demo.py --config-file ... --dataset synth_shapes_val --max-images 8 --output out/
"""

import argparse
import glob
import logging
import os
import sys

import cv2
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import d2ext  # noqa: E402,F401  (registration)
from d2ext.engine import setup_cfg  # noqa: E402
from d2ext.utils.visualize import DEFAULT_CONFIDENCE, draw_predictions, rendering_path  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="image files or glob patterns")
    src.add_argument(
        "--dataset",
        help="a registered dataset name (synth_shapes_val, one of DATASETS.REGISTER...)",
    )
    parser.add_argument("--max-images", type=int, default=8)
    parser.add_argument("--output", required=True, help="folder for the rendered images")
    parser.add_argument("--confidence-threshold", type=float, default=DEFAULT_CONFIDENCE)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    # setup_cfg sets up the "d2ext" logger too
    cfg = setup_cfg(
        argparse.Namespace(config_file=args.config_file, opts=args.opts, eval_only=True),
        freeze=True,
    )
    logger = logging.getLogger("d2ext.demo")
    if args.dataset:
        from d2ext.data.synthetic import ensure_synthetic_generated

        ensure_synthetic_generated([args.dataset])
        files = [d["file_name"] for d in DatasetCatalog.get(args.dataset)][: args.max_images]
        metadata = MetadataCatalog.get(args.dataset)
    else:
        files = sorted(
            f
            for pattern in args.input
            for f in (glob.glob(os.path.expanduser(pattern)) or [pattern])
        )
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"input images not found: {missing}")

    predictor = DefaultPredictor(cfg)
    os.makedirs(args.output, exist_ok=True)
    for path in files:
        image_bgr = read_image(path, format="BGR")
        with torch.no_grad():
            predictions = predictor(image_bgr)
        rendered = draw_predictions(
            image_bgr[:, :, ::-1], predictions, metadata, args.confidence_threshold
        )
        out_path = rendering_path(args.output, path)
        cv2.imwrite(out_path, rendered[:, :, ::-1])
        if "instances" in predictions:
            scores = predictions["instances"].scores
            n = f"{len(scores)} detections, {int((scores >= args.confidence_threshold).sum())} drawn"
        else:
            n = "segmentation"
        logger.info("%s: %s -> %s", path, n, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
