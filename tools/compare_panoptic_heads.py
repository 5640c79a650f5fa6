#!/usr/bin/env python
"""Evaluate one UPSNet checkpoint with two panoptic combinations: UPSNet's panoptic head (the
model's own ``panoptic_seg``) and D2's Panoptic FPN heuristic
(:func:`detectron2.modeling.meta_arch.panoptic_fpn.combine_semantic_and_instance_outputs`) on the
same network's stock Mask R-CNN detections and semantic head. Same weights, same images, same
PQ evaluator, so the difference is the combination alone (docs/RESULTS.md, UPSNet vs Panoptic
FPN on ``synth_panoptic_test``).

    python tools/compare_panoptic_heads.py --config-file configs/UPSNet/upsnet_R_18_synth_ft.yaml \
        --dataset synth_panoptic_test MODEL.WEIGHTS output/upsnet_R_18_synth_ft/model_final.pth \
        MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT 256

D2's heuristic reads ``MODEL.PANOPTIC_FPN.COMBINE`` (overlap, stuff area limit, instance score
threshold); the semantic head's thing classes are its "things" label, pixels D2 leaves to void.
"""

import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.structures import Instances
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import d2ext  # noqa: E402,F401  (registration)
from d2ext.config import add_d2ext_config  # noqa: E402
from d2ext.data.panoptic_label_space import PanopticLabelSpace  # noqa: E402
from d2ext.evaluation.panoptic_evaluation import FastCOCOPanopticEvaluator  # noqa: E402

PQ_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")
logger = logging.getLogger("d2ext.compare_panoptic_heads")


def d2_combination(
    instances: Instances,
    sem_seg: torch.Tensor,
    label_space: PanopticLabelSpace,
    sem_seg_order: Optional[torch.Tensor],
    overlap_threshold: float,
    stuff_area_limit: int,
    instances_score_thresh: float,
) -> Tuple[torch.Tensor, List[Dict]]:
    """D2's combination of a UPSNet output, with the category ids UPSNet's head gives.

    Args:
        instances: the stock detections (``pred_masks``, ``scores``, ``pred_classes``).
        sem_seg: (C, H, W) semantic logits in the model's output channel order.
        sem_seg_order: output channel k is internal channel ``sem_seg_order[k]`` (None: the same).
    """
    internal = sem_seg.argmax(dim=0)
    if sem_seg_order is not None:
        internal = sem_seg_order.to(internal.device)[internal]
    # D2's labels: 0 is "things", stuff s is s + 1
    labels = torch.where(internal < label_space.num_stuff, internal + 1, 0)
    panoptic, segments = combine_semantic_and_instance_outputs(
        instances, labels, overlap_threshold, stuff_area_limit, instances_score_thresh
    )
    for s in segments:
        c = s["category_id"]
        s["category_id"] = int(
            label_space.thing_ids[c] if s["isthing"] else label_space.stuff_ids[c - 1]
        )
    return panoptic, segments


def compare(args) -> Dict[str, Dict[str, float]]:
    """PQ of both combinations over the whole dataset (also written as json to --output)."""
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    model = build_model(cfg).eval()
    if not hasattr(model, "panoptic_head"):
        raise ValueError(
            f"{args.config_file}: MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r} has no "
            "UPSNet panoptic head to compare"
        )
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    combine = cfg.MODEL.PANOPTIC_FPN.COMBINE
    evaluators = {k: FastCOCOPanopticEvaluator(dataset) for k in ("upsnet_head", "d2_combination")}
    for e in evaluators.values():
        e.reset()
    with torch.no_grad():
        for inputs in build_detection_test_loader(cfg, dataset):
            outputs = model(inputs)
            combined = [
                {
                    "panoptic_seg": d2_combination(
                        out["instances"],
                        out["sem_seg"],
                        model.panoptic_head.label_space,
                        model.sem_seg_order,
                        combine.OVERLAP_THRESH,
                        combine.STUFF_AREA_LIMIT,
                        combine.INSTANCES_CONFIDENCE_THRESH,
                    )
                }
                for out in outputs
            ]
            evaluators["upsnet_head"].process(inputs, outputs)
            evaluators["d2_combination"].process(inputs, combined)
    res = {}
    for name, e in evaluators.items():
        pq = e.evaluate()["panoptic_seg"]
        res[name] = {k: pq[k] for k in PQ_KEYS}
    logger.info("panoptic combinations on %s: %s", dataset, json.dumps(res))
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
        "--dataset", default="", help="a registered panoptic dataset (default: the first test set)"
    )
    parser.add_argument("--output", default="", help="write both PQ results here as json")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser


if __name__ == "__main__":
    setup_logger(name="d2ext")
    print(json.dumps(compare(get_parser().parse_args())))
