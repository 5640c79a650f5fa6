#!/usr/bin/env python
"""Visualise a model's predictions with D2's Visualizer.

    python tools/demo.py --config-file configs/Base/mask_rcnn_R_18_FPN_synth.yaml \
        --input img1.jpg img2.jpg --output out/ MODEL.WEIGHTS output/model_final.pth
    python tools/demo.py --config-file ... --dataset synth_shapes_val --max-images 8 --output out/

Top-down landmark models (``configs/Hourglass/*face*``) localise landmarks inside given boxes:
``--box X0 Y0 X1 Y1`` (repeatable; the same boxes on every input image), the annotation boxes
with ``--dataset``, else the whole image (an already cropped face or person)::

    python tools/demo.py --config-file configs/Hourglass/hourglass_face_synth.yaml \
        --input faces/ --box 30 40 200 230 --output out/ MODEL.WEIGHTS model_final.pth

An exported model (tools/export_model.py) runs with ``--exported-model model.onnx`` (onnxruntime)
or ``model.ts`` (TorchScript) in place of the eager model.
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
from detectron2.structures import BoxMode

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import d2ext  # noqa: E402,F401  (registration)
from d2ext.data.build import is_top_down  # noqa: E402
from d2ext.engine import ExportedPredictor, LandmarkPredictor, setup_cfg  # noqa: E402
from d2ext.utils.densepose_vis import write_image_iuv_png, write_iuv_png  # noqa: E402
from d2ext.utils.visualize import (  # noqa: E402
    DEFAULT_CONFIDENCE,
    densepose_charts,
    draw_predictions,
    rendering_path,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


def _expand_input(pattern: str):
    """A folder -> its images, subfolders included (WIDER FACE keeps images in one folder per
    event), sorted; a glob -> its matches; else the path. A folder without images is an error."""
    path = os.path.expanduser(pattern)
    if os.path.isdir(path):
        found = sorted(
            os.path.join(root, f)
            for root, _, names in os.walk(path)
            for f in names
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not found:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path!r}")
        return found
    return glob.glob(path) or [path]


def _output_paths(output_dir: str, files):
    """``<output>/<stem>.png`` per input; inputs sharing a stem (``0--Parade/1.jpg`` and
    ``1--Handshaking/1.jpg``) are told apart by their folder: ``<folder>_<stem>.png``."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    shared = {s for s in stems if stems.count(s) > 1}
    return {
        f: rendering_path(output_dir, f)
        if s not in shared
        else os.path.join(output_dir, f"{os.path.basename(os.path.dirname(f))}_{s}.png")
        for f, s in zip(files, stems)
    }


def _annotation_boxes(record):
    return [
        BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
        for a in record.get("annotations", [])
        if not a.get("iscrowd", 0)
    ]


def _write_iuv(out_path: str, predictions, confidence: float, image_size) -> None:
    """The IUV PNGs of ``--iuv`` beside the rendering ``out_path``."""
    instances = predictions.get("instances")
    if instances is None or not instances.has("pred_densepose"):
        raise ValueError("--iuv needs a DensePose model (outputs with pred_densepose)")
    instances = instances.to("cpu")
    instances = instances[instances.scores >= confidence]
    charts = densepose_charts(instances)
    stem = os.path.splitext(out_path)[0]
    boxes = instances.pred_boxes.tensor
    write_image_iuv_png(f"{stem}_iuv.png", image_size, boxes, instances.scores, charts)
    for k, (labels, uv) in enumerate(charts):
        write_iuv_png(f"{stem}_iuv_{k}.png", labels, uv)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    src.add_argument(
        "--dataset",
        help="a registered dataset name (synth_shapes_val, one of DATASETS.REGISTER...)",
    )
    parser.add_argument("--max-images", type=int, default=8)
    parser.add_argument("--output", required=True, help="folder for the rendered images")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help=f"instances scoring below it are not drawn (default {DEFAULT_CONFIDENCE}; 0 for "
        "top-down landmark models, whose instances are the given boxes)",
    )
    parser.add_argument(
        "--box",
        nargs=4,
        type=float,
        action="append",
        metavar=("X0", "Y0", "X1", "Y1"),
        help="top-down landmark models: a box (image pixels) to localise landmarks in",
    )
    parser.add_argument(
        "--iuv",
        action="store_true",
        help="DensePose models: also write <stem>_iuv.png (the whole image: I, U*255, V*255 of "
        "every drawn detection, higher scores on top) and <stem>_iuv_<k>.png per detection",
    )
    parser.add_argument(
        "--exported-model",
        metavar="FILE",
        help="run a file of tools/export_model.py (.onnx with onnxruntime, .ts TorchScript) "
        "instead of the eager model and MODEL.WEIGHTS",
    )
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
        files = sorted(f for pattern in args.input for f in _expand_input(pattern))
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"input images not found: {missing}")

    top_down = is_top_down(cfg)
    if args.box and not top_down:
        raise ValueError(
            f"--box is for top-down landmark models; {cfg.MODEL.META_ARCHITECTURE} detects"
        )
    confidence = args.confidence_threshold
    if confidence is None:
        confidence = 0.0 if top_down else DEFAULT_CONFIDENCE
    boxes = {}
    if top_down and args.dataset:  # the annotation boxes, as evaluation
        boxes = {d["file_name"]: _annotation_boxes(d) for d in DatasetCatalog.get(args.dataset)}
    if args.exported_model:
        predictor = ExportedPredictor(cfg, args.exported_model)
    else:
        predictor = LandmarkPredictor(cfg) if top_down else DefaultPredictor(cfg)
    os.makedirs(args.output, exist_ok=True)
    out_paths = _output_paths(args.output, files)
    for path in files:
        image_bgr = read_image(path, format="BGR")
        with torch.no_grad():
            if top_down:
                predictions = {"instances": predictor(image_bgr, boxes.get(path, args.box))}
            else:
                predictions = predictor(image_bgr)
        rendered = draw_predictions(image_bgr[:, :, ::-1], predictions, metadata, confidence)
        out_path = out_paths[path]
        cv2.imwrite(out_path, rendered[:, :, ::-1])
        if args.iuv:
            _write_iuv(out_path, predictions, confidence, image_bgr.shape[:2])
        if "instances" in predictions:
            scores = predictions["instances"].scores
            n = f"{len(scores)} instances, {int((scores >= confidence).sum())} drawn"
        else:
            n = "segmentation"
        logger.info("%s: %s -> %s", path, n, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
