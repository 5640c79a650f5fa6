#!/usr/bin/env python
"""Check d2ext's fast mask paste against D2's on a model and dataset: run the model's inference
with ``MODEL.FAST_POSTPROCESS.PASTE_MASKS`` on and off (same weights, same images) and report how
many mask pixels agree.

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
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import d2ext  # noqa: E402,F401  (registration)
from d2ext.config import add_d2ext_config  # noqa: E402

FAST_OF = {"GeneralizedRCNN": "FastGeneralizedRCNN", "PanopticFPN": "FastPanopticFPN"}
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
            res["different_pixels"] += int((ia.pred_masks != ib.pred_masks).sum())
    res["agreement_percent"] = 100.0 * (1 - res["different_pixels"] / max(res["pixels"], 1))
    logger.info("fast vs D2 paste on %s: %s", dataset, json.dumps(res))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(res, f, indent=1)
    return res


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", default="", help="a registered dataset (default: the first test set)")
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
