"""Evaluation benchmarks: D2's COCOEvaluator (pycocotools) and panopticapi vs d2ext's.

Ground truth is d2ext's synthetic generator at 480x640 (generated once under
``$DETECTRON2_DATASETS``); predictions are perturbed copies of it
(:mod:`d2ext.data.synthetic.predictions`), made outside the timed regions.
"""

import contextlib
import io
import json
import os
import tempfile
import time
from typing import Callable, List, Tuple

import numpy as np
import torch

from . import BenchRow, register_benchmark, time_fn

IMAGE_SIZE = (480, 640)


def _dataset(kind: str, num_images: int, seed: int) -> str:
    from d2ext.data.synthetic import (
        ensure_synthetic_generated,
        register_synthetic_panoptic,
        register_synthetic_shapes,
    )

    name = f"bench_eval_{kind}_{num_images}"
    register = register_synthetic_shapes if kind == "shapes" else register_synthetic_panoptic
    register(name, num_images=num_images, image_size=IMAGE_SIZE, seed=seed, max_objects=40)
    ensure_synthetic_generated(name)
    return name


def _timed_process(
    evaluators, pairs_fn: Callable[[int], Tuple[dict, dict]], num_images: int
) -> List[float]:
    """Total seconds each evaluator spends in ``process()`` over all images (inputs made untimed);
    the evaluators take turns first on each image."""
    totals = [0.0] * len(evaluators)
    for ev in evaluators:
        ev.reset()
    for i in range(num_images):
        inp, out = pairs_fn(i)
        order = list(range(len(evaluators)))[:: 1 if i % 2 else -1]
        for k in order:
            t0 = time.perf_counter()
            evaluators[k].process([inp], [out])
            totals[k] += time.perf_counter() - t0
    return totals


def _evaluate(ev):
    """(seconds, results) of one ``evaluate()``: D2's may run only once (it remaps the
    category ids of its stored predictions in place)."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        res = ev.evaluate()
    return time.perf_counter() - t0, res


@register_benchmark("coco_eval")
def bench_coco_eval(device: str, quick: bool) -> List[BenchRow]:
    """COCO bbox+segm evaluation, process() + evaluate(), D2 + pycocotools vs ours."""
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOEvaluator
    from pycocotools.coco import COCO

    from d2ext.data.synthetic.predictions import instance_predictions_from_gt
    from d2ext.evaluation import FastCOCOEvaluator

    num_images = 40 if quick else 200
    name = _dataset("shapes", num_images, seed=11)
    meta = MetadataCatalog.get(name)
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(meta.json_file)
    img_ids = sorted(api.imgs)
    num_dets = []

    def pairs_fn(i):
        rng = np.random.default_rng([5, i])
        inp, out = instance_predictions_from_gt(
            api,
            img_ids[i],
            meta.thing_dataset_id_to_contiguous_id,
            rng,
            jitter=2.0,
            max_false_positives=16,
        )
        out["instances"] = out["instances"].to(device)
        num_dets.append(len(out["instances"]))
        return inp, out

    with tempfile.TemporaryDirectory() as tmp:
        d2 = COCOEvaluator(name, output_dir=os.path.join(tmp, "d2"), use_fast_impl=False)
        ours = FastCOCOEvaluator(name, output_dir=os.path.join(tmp, "ours"))
        proc_d2, proc_ours = _timed_process([d2, ours], pairs_fn, num_images)
        eval_d2, res_d2 = _evaluate(d2)
        eval_ours, res_ours = _evaluate(ours)
    ap_diff = max(
        abs(res_d2[t][k] - res_ours[t][k])
        for t in res_d2
        for k in res_d2[t]
        if res_d2[t][k] == res_d2[t][k]
    )
    what = f"{num_images} imgs {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, {np.mean(num_dets):.0f} dets/img"
    what += f" (min {min(num_dets)}, max {max(num_dets)})"
    extra = {"segm AP": f"{res_ours['segm']['AP']:.2f}", "max |AP diff|": f"{ap_diff:.1e}"}
    return [
        BenchRow(f"process(): {what}", "D2 COCOEvaluator.process", proc_d2, proc_ours),
        BenchRow(
            "evaluate(): bbox+segm", "D2 COCOEvaluator.evaluate (pycocotools)", eval_d2, eval_ours
        ),
        BenchRow(
            "process()+evaluate()",
            "D2 COCOEvaluator",
            proc_d2 + eval_d2,
            proc_ours + eval_ours,
            target=3.0,
            extra=extra,
        ),
    ]


def _panoptic_predictions(meta, num_images: int, out_dir: str):
    """Perturbed copies of the gt: written as PNGs + json into ``out_dir`` and returned as D2
    model outputs (contiguous ids + isthing)."""
    from panopticapi.utils import id2rgb
    from PIL import Image

    from d2ext.data.synthetic.predictions import perturb_panoptic
    from d2ext.evaluation import read_panoptic_png

    with open(meta.panoptic_json) as f:
        gt = json.load(f)
    things = meta.thing_dataset_id_to_contiguous_id
    contiguous = {**things, **meta.stuff_dataset_id_to_contiguous_id}
    annotations, pairs = [], []
    for i, ann in enumerate(gt["annotations"][:num_images]):
        rng = np.random.default_rng([6, i])
        gt_ids = read_panoptic_png(os.path.join(meta.panoptic_root, ann["file_name"]))
        pred, segments = perturb_panoptic(
            gt_ids, ann["segments_info"], sorted(contiguous), rng, op_prob=0.05
        )
        Image.fromarray(id2rgb(pred)).save(os.path.join(out_dir, ann["file_name"]))
        annotations.append(
            {"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segments}
        )
        info = [
            {
                "id": s["id"],
                "category_id": contiguous[s["category_id"]],
                "isthing": s["category_id"] in things,
            }
            for s in segments
        ]
        inp = {"image_id": ann["image_id"], "file_name": ann["file_name"]}
        pairs.append((inp, torch.from_numpy(pred.astype(np.int32)), info))
    pred_json = os.path.join(out_dir, "predictions.json")
    with open(pred_json, "w") as f:
        json.dump({"annotations": annotations}, f)
    return pred_json, pairs


@register_benchmark("pq")
def bench_pq(device: str, quick: bool) -> List[BenchRow]:
    """Panoptic Quality: panopticapi pq_compute vs pq_compute_fast (same files), and D2's
    COCOPanopticEvaluator vs FastCOCOPanopticEvaluator (in-memory predictions)."""
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOPanopticEvaluator
    from panopticapi.evaluation import pq_compute

    from d2ext.evaluation import FastCOCOPanopticEvaluator, pq_compute_fast, read_panoptic_png

    num_images = 40 if quick else 200
    name = _dataset("panoptic", num_images, seed=12)
    meta = MetadataCatalog.get(name)
    iters = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        pred_json, pairs = _panoptic_predictions(meta, num_images, tmp)
        args = (meta.panoptic_json, pred_json, meta.panoptic_root, tmp)

        def stock():
            with contextlib.redirect_stdout(io.StringIO()):
                return pq_compute(*args)

        t_stock = time_fn(stock, warmup=0, iters=iters)
        t_fast = time_fn(lambda: pq_compute_fast(*args), warmup=0, iters=iters)
        ref, ours = stock(), pq_compute_fast(*args)
        diff = max(
            abs(ref[g][m] - ours[g][m])
            for g in ("All", "Things", "Stuff")
            for m in ("pq", "sq", "rq")
        )
        # both sides decode every gt and predicted PNG once: that floor bounds the ratio
        with open(meta.panoptic_json) as f:
            files = [a["file_name"] for a in json.load(f)["annotations"]][:num_images]
        t0 = time.perf_counter()
        for fn in files:
            read_panoptic_png(os.path.join(meta.panoptic_root, fn))
            read_panoptic_png(os.path.join(tmp, fn))
        t_decode = (time.perf_counter() - t0) / num_images

        d2 = COCOPanopticEvaluator(name, os.path.join(tmp, "d2"))
        fast = FastCOCOPanopticEvaluator(name, os.path.join(tmp, "ours"))

        def pairs_fn(i):  # fresh segments_info: D2's process() edits them in place
            inp, ids, info = pairs[i]
            return inp, {"panoptic_seg": (ids.to(device), [dict(s) for s in info])}

        proc_d2, proc_fast = _timed_process([d2, fast], pairs_fn, num_images)
        eval_d2, res_d2 = _evaluate(d2)
        eval_fast, res_fast = _evaluate(fast)
    ev_diff = max(
        abs(res_d2["panoptic_seg"][k] - res_fast["panoptic_seg"][k]) for k in res_d2["panoptic_seg"]
    )
    what = f"{num_images} imgs {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}"
    return [
        BenchRow(
            f"pq_compute, {what} PNG+json",
            "panopticapi pq_compute (process pool)",
            t_stock,
            t_fast,
            target=5.0,
            extra={
                "PQ": f"{100 * ours['All']['pq']:.2f}",
                "max |diff|": f"{diff:.1e}",
                "2 PNG reads ms/img (1 thread)": f"{1e3 * t_decode:.1f}",
            },
        ),
        BenchRow(
            f"panoptic evaluator process()+evaluate(), {what}",
            "D2 COCOPanopticEvaluator",
            proc_d2 + eval_d2,
            proc_fast + eval_fast,
            target=5.0,
            extra={
                "process ms/img d2/ours": f"{1e3 * proc_d2 / num_images:.1f}/"
                f"{1e3 * proc_fast / num_images:.1f}",
                "max |PQ diff| (%)": f"{ev_diff:.1e}",
            },
        ),
    ]
