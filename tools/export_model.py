#!/usr/bin/env python
"""Export a d2ext model (YOLACT, RetinaFace, a top-down landmark model) to TorchScript or ONNX,
with D2's ``tools/deploy/export_model.py`` conventions::

    python tools/export_model.py --config-file configs/RetinaFace/retinaface_mnet025_640.yaml \
        --export-method tracing --format onnx --output output/export \
        --sample-image face.jpg MODEL.WEIGHTS retinaface_mnet025.pth

The exported graph holds the whole inference (pre-processing from raw pixels, network,
decoding, NMS, mask assembly / heatmap decoding) and takes float32 (N, 3, H, W) pixels in
``INPUT.FORMAT`` (landmark models: (R, 3, h, w) crops and their (R, 2, 3) crop-to-image
affines); batch and image size are dynamic unless ``--fixed-shape H W``. Run it with
``d2ext.engine.ExportedPredictor`` or ``tools/demo.py --exported-model``. Only tracing is
supported: d2ext's inference is written as tensor programs for the tracer, not TorchScript.
"""

import argparse
import logging
import os
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import d2ext  # noqa: E402,F401  (registration)
from d2ext.engine import setup_cfg  # noqa: E402
from d2ext.export import (  # noqa: E402
    build_export_wrapper,
    export_onnx,
    export_torchscript,
    load_torchscript,
    onnx_session,
    run_onnx,
    run_torchscript,
)

logger = logging.getLogger("d2ext.export")


def sample_image(cfg, path):
    """``--sample-image`` in ``INPUT.FORMAT`` (uint8 HxWx3), else the first image of
    ``DATASETS.TEST[0]`` as D2's tool does."""
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--sample-image {path!r} does not exist")
        return read_image(path, format=cfg.INPUT.FORMAT)
    if not cfg.DATASETS.TEST:
        raise ValueError("give --sample-image (the config has no DATASETS.TEST to take one from)")
    from d2ext.data.synthetic import ensure_synthetic_generated

    ensure_synthetic_generated(list(cfg.DATASETS.TEST))
    records = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    if not records:
        raise ValueError(f"DATASETS.TEST[0] {cfg.DATASETS.TEST[0]!r} has no images")
    return read_image(records[0]["file_name"], format=cfg.INPUT.FORMAT)


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", choices=["torchscript", "onnx"], default="onnx")
    parser.add_argument("--export-method", choices=["tracing", "scripting"], default="tracing")
    parser.add_argument("--output", required=True, help="folder for model.ts / model.onnx")
    parser.add_argument("--sample-image", default=None, help="image to trace with")
    parser.add_argument(
        "--fixed-shape",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="specialise the graph to H x W inputs (detectors; the sample is resized to it)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="batch of the traced sample")
    parser.add_argument(
        "--check",
        action="store_true",
        help="run the exported file on the sample and report its largest difference to eager",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[])
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.export_method == "scripting":
        raise ValueError(
            "--export-method scripting: d2ext's models are exported by tracing (their inference "
            "is written as tensor programs for the tracer); use --export-method tracing"
        )
    cfg = setup_cfg(
        argparse.Namespace(config_file=args.config_file, opts=args.opts, eval_only=True),
        freeze=True,
    )
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    wrapper = build_export_wrapper(
        model, fixed_shape=args.fixed_shape, input_format=cfg.INPUT.FORMAT
    )
    inputs = wrapper.sample_inputs(sample_image(cfg, args.sample_image), args.batch_size)
    os.makedirs(args.output, exist_ok=True)
    if args.format == "onnx":
        path = export_onnx(wrapper, inputs, os.path.join(args.output, "model.onnx"))
    else:
        path = os.path.join(args.output, "model.ts")
        export_torchscript(wrapper, inputs, path)
    logger.info(
        "exported %s (%s, inputs %s) to %s (%.1f MB)",
        wrapper.model_name,
        args.format,
        ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(wrapper.input_names, inputs)),
        path,
        os.path.getsize(path) / 2**20,
    )
    if args.check:
        report_check(wrapper, inputs, path, args.format)
    return path


def report_check(wrapper, inputs, path, fmt):
    """Largest absolute difference of every output between the exported file and eager."""
    with torch.no_grad():
        eager = wrapper(*inputs)
    if fmt == "onnx":
        session, meta = onnx_session(path)
        exported = {k: torch.from_numpy(v) for k, v in run_onnx(session, meta, inputs).items()}
    else:
        module, meta = load_torchscript(path)
        exported = run_torchscript(module, meta, inputs)
    for name in wrapper.output_names:
        a, b = eager[name], exported[name]
        if a.shape != b.shape:
            logger.warning("check %s: shape %s exported vs %s eager", name, b.shape, a.shape)
            continue
        diff = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
        logger.info("check %s %s: max |exported - eager| = %.3g", name, tuple(a.shape), diff)


if __name__ == "__main__":
    main()
