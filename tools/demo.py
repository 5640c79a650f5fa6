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

A video (any file OpenCV reads) becomes an mp4 of the same size and frame rate, instances drawn
in one colour per track (``d2ext.engine.VideoPredictor``: mask-IoU track ids, the model's video
state carried across frames), with the time of every frame and a progress bar::

    python tools/demo.py --config-file configs/YOLACT/yolact_R_18_synth.yaml \
        --video in.mp4 --output out.mp4 MODEL.WEIGHTS output/yolact_R_18_synth/model_final.pth

An exported model (tools/export_model.py) runs with ``--exported-model model.onnx`` (onnxruntime)
or ``model.ts`` (TorchScript) in place of the eager model.
"""

import argparse
import glob
import logging
import os
import sys
import time

import cv2
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.structures import BoxMode
from tqdm import tqdm

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import d2ext  # noqa: E402,F401  (registration)
from d2ext.data.build import is_top_down  # noqa: E402
from d2ext.engine import (  # noqa: E402
    ExportedPredictor,
    LandmarkPredictor,
    VideoPredictor,
    setup_cfg,
)
from d2ext.modeling.common import Tracker  # noqa: E402
from d2ext.utils.densepose_vis import write_image_iuv_png, write_iuv_png  # noqa: E402
from d2ext.utils.visualize import (  # noqa: E402
    DEFAULT_CONFIDENCE,
    densepose_charts,
    draw_panoptic_tracks,
    draw_predictions,
    rendering_path,
    track_colors,
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
    src.add_argument("--video", help="a video file (OpenCV-readable: mp4, avi, ...)")
    parser.add_argument("--max-images", type=int, default=8)
    parser.add_argument(
        "--output",
        required=True,
        help="folder for the rendered images; with --video the .mp4 file to write",
    )
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
    if args.video:
        return _demo_video(args, cfg, logger)
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


def _open_video(path: str) -> cv2.VideoCapture:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--video {path!r} does not exist")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(
            f"--video {path!r}: OpenCV cannot open it (a corrupt or truncated file, a codec "
            f"this OpenCV lacks, or an mp4 written without any frame)"
        )
    return capture


def _video_frames(capture: cv2.VideoCapture):
    """BGR frames until the first one OpenCV cannot read (the end, or a corrupt frame)."""
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def _demo_video(args, cfg, logger) -> int:
    """``--video IN --output OUT.mp4``: every frame through :class:`VideoPredictor`, drawn with
    a colour per track id, written as mp4 ('mp4v') at the input's frame rate."""
    if args.exported_model or args.iuv or args.box:
        raise ValueError("--video does not combine with --exported-model, --iuv or --box")
    if is_top_down(cfg):
        raise ValueError(
            f"--video runs detectors on whole frames; {cfg.MODEL.META_ARCHITECTURE} is a "
            f"top-down landmark model"
        )
    if os.path.isdir(args.output) or not args.output.lower().endswith(".mp4"):
        raise ValueError(
            f"--video writes an mp4 file: --output must end in .mp4, got {args.output!r}"
        )
    confidence = args.confidence_threshold
    if confidence is None:
        confidence = DEFAULT_CONFIDENCE
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    capture = _open_video(args.video)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps > 0 else 30.0  # containers without a rate (image sequences)
    announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    # only the drawn instances are tracked: a hidden low-score duplicate cannot take a track
    predictor = VideoPredictor(cfg, tracker=Tracker(min_score=confidence))
    writer = None
    model_seconds = 0.0
    start = time.perf_counter()
    progress = tqdm(total=announced if announced > 0 else None, unit="frame", file=sys.stderr)
    try:
        for index, frame in enumerate(_video_frames(capture)):
            tic = time.perf_counter()
            instances = predictor(frame)
            seconds = time.perf_counter() - tic
            model_seconds += seconds
            if "panoptic_seg" in predictor.last_output:  # video panoptic: stuff + tracked things
                rendered = draw_panoptic_tracks(frame[:, :, ::-1], predictor.last_output, metadata)
            else:
                rendered = draw_predictions(
                    frame[:, :, ::-1], {"instances": instances}, metadata, confidence, track_colors
                )
            if writer is None:
                writer = _video_writer(args.output, fps, frame.shape[1], frame.shape[0])
            writer.write(rendered[:, :, ::-1])
            drawn = int((instances.scores >= confidence).sum())
            progress.write(
                f"frame {index}: {len(instances)} instances, {drawn} drawn, "
                f"{1000 * seconds:.1f} ms ({1 / max(seconds, 1e-9):.1f} fps)"
            )
            progress.update()
            progress.set_postfix(fps=f"{(index + 1) / model_seconds:.1f}")
    finally:
        progress.close()
        capture.release()
        if writer is not None:
            writer.release()
    frames = predictor.frame_index
    if frames == 0:
        raise ValueError(f"--video {args.video!r} has no frame OpenCV can read")
    if announced > frames:
        logger.warning(
            "%s: read %d of the %d frames its header announces (reading stops at the first "
            "frame OpenCV cannot decode)",
            args.video,
            frames,
            announced,
        )
    total = time.perf_counter() - start
    logger.info(
        "%s: %d frames -> %s; model + tracking %.1f ms/frame (%.1f fps), with drawing and "
        "writing %.1f fps",
        args.video,
        frames,
        args.output,
        1000 * model_seconds / frames,
        frames / model_seconds,
        frames / total,
    )
    return 0


def _video_writer(path: str, fps: float, width: int, height: int) -> cv2.VideoWriter:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise ValueError(f"--output {path!r}: OpenCV cannot write an mp4 there")
    return writer


if __name__ == "__main__":
    sys.exit(main())
