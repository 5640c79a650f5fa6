#!/usr/bin/env python
"""Check d2ext's fast mask paste against D2's on a model and dataset: run the model's inference
with ``MODEL.FAST_POSTPROCESS.PASTE_MASKS`` on and off (same weights, same images) and report how
many mask pixels agree, and how many lie at a threshold tie: where the float value D2's paste
thresholds is within 1e-6 of the threshold, which is the only place the kernel may differ from
D2 on CPUs whose torch kernels do not use FMA (see d2ext/layers/mask_ops.py).

    python tools/compare_fast_paste.py --config-file configs/Base/mask_rcnn_R_18_FPN_synth.yaml \
        --max-images 50 MODEL.WEIGHTS output/mask_rcnn_R_18_FPN_synth/model_final.pth

Stock ``GeneralizedRCNN`` / ``PanopticFPN`` configs are run as ``FastGeneralizedRCNN`` /
``FastPanopticFPN`` (the A/B switch is that class's); the dataset is ``--dataset`` or the
config's first test set, read by D2's test loader.
"""

import argparse
import json
import logging
import os
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model, detector_postprocess
from detectron2.structures import Instances
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import d2ext  # noqa: E402,F401  (registration)
from d2ext.config import add_d2ext_config  # noqa: E402
from d2ext.layers.mask_ops import paste_mask_values  # noqa: E402

FAST_OF = {"GeneralizedRCNN": "FastGeneralizedRCNN", "PanopticFPN": "FastPanopticFPN"}
MASK_THRESHOLD = 0.5  # detector_postprocess's default, which both meta-architectures use
TIE = 1e-6  # a pasted value this close to the threshold is a tie
logger = logging.getLogger("d2ext.compare_fast_paste")


def _cfg(args, fast: bool):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in FAST_OF and arch not in FAST_OF.values():
        raise ValueError(
            f"MODEL.META_ARCHITECTURE={arch!r} has no fast-paste variant (known: {sorted(FAST_OF)})"
        )
    cfg.MODEL.META_ARCHITECTURE = FAST_OF.get(arch, arch)
    cfg.MODEL.FAST_POSTPROCESS.PASTE_MASKS = fast
    cfg.freeze()
    return cfg


def paste_values(model, inputs, instances: Instances) -> torch.Tensor:
    """(R, H, W) float32 on the CPU: the values D2's paste thresholds for ``instances``, the
    model's final output for the one image of ``inputs``. They are the raw (R, 1, M, M) mask
    probabilities pasted into the final boxes; the raw rows are first filtered by D2's own
    ``detector_postprocess`` (it keeps boxes ``nonempty()`` once rescaled and clipped), so row i
    of the raw output is paired with row i of ``instances``."""
    raw = model.inference(inputs, do_postprocess=False)
    raw = (raw[0] if isinstance(raw, tuple) else raw)[0].to("cpu")  # PanopticFPN: (dets, sem_seg)
    rows = Instances(raw.image_size, pred_boxes=raw.pred_boxes.clone(), row=torch.arange(len(raw)))
    kept = detector_postprocess(rows, *instances.image_size)  # scales pred_boxes in place
    if not torch.equal(kept.pred_boxes.tensor, instances.pred_boxes.tensor):
        raise RuntimeError("the raw detections do not match the final ones row by row")
    boxes = instances.pred_boxes.tensor
    return paste_mask_values(raw.pred_masks[kept.row, 0].float(), boxes, instances.image_size)


def compare(args) -> dict:
    """Run both pastes over the dataset; returns the counts (also written as json to --output)."""
    cfg_stock, cfg_fast = _cfg(args, False), _cfg(args, True)
    stock = build_model(cfg_stock).eval()
    DetectionCheckpointer(stock).load(cfg_stock.MODEL.WEIGHTS)
    fast = build_model(cfg_fast).eval()
    fast.load_state_dict(stock.state_dict())
    dataset = args.dataset or cfg_stock.DATASETS.TEST[0]
    loader = build_detection_test_loader(cfg_stock, dataset)
    res = {"images": 0, "instances": 0, "pixels": 0, "different_pixels": 0, "same_detections": True}
    # pixels whose D2 paste value is a tie (within TIE of the threshold), and the differing ones
    res.update(pixels_at_ties=0, different_pixels_at_ties=0)
    with torch.no_grad():
        for i, inputs in enumerate(loader):
            if args.max_images and i >= args.max_images:
                break
            a, b = stock(inputs)[0], fast(inputs)[0]
            ia, ib = a["instances"].to("cpu"), b["instances"].to("cpu")
            same = len(ia) == len(ib) and torch.equal(ia.pred_boxes.tensor, ib.pred_boxes.tensor)
            res["same_detections"] &= same
            if not same or not ia.has("pred_masks"):
                continue
            res["images"] += 1
            res["instances"] += len(ia)
            res["pixels"] += ia.pred_masks.numel()
            diff = ia.pred_masks != ib.pred_masks
            res["different_pixels"] += int(diff.sum())
            if len(ia):
                ties = (paste_values(stock, inputs, ia) - MASK_THRESHOLD).abs() <= TIE
                res["pixels_at_ties"] += int(ties.sum())
                res["different_pixels_at_ties"] += int((diff & ties).sum())
    res["agreement_percent"] = 100.0 * (1 - res["different_pixels"] / max(res["pixels"], 1))
    logger.info("fast vs D2 paste on %s: %s", dataset, json.dumps(res))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(res, f, indent=1)
    return res


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument(
        "--dataset", default="", help="a registered dataset (default: the first test set)"
    )
    parser.add_argument("--max-images", type=int, default=0, help="0: all")
    parser.add_argument("--output", default="", help="write the counts here as json")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser


if __name__ == "__main__":
    setup_logger(name="d2ext")
    res = compare(get_parser().parse_args())
    print(json.dumps(res))
    if not res["same_detections"]:
        sys.exit("the detections differ between the two runs: only the paste should")
