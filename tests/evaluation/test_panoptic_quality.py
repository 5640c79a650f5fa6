"""pq_compute_fast / PQStatFast against panopticapi's pq_compute on the same files."""

import contextlib
import copy
import io
import json
import os

import numpy as np
import pytest
from panopticapi.evaluation import pq_compute, pq_compute_single_core
from panopticapi.utils import id2rgb
from PIL import Image

from d2ext.data.synthetic.predictions import perturb_panoptic
from d2ext.evaluation.panoptic_png import read_panoptic_png
from d2ext.evaluation.panoptic_quality import PQStatFast, panoptic_image_stats, pq_compute_fast
from d2ext.layers import extension_available


def _write_predictions(gt_json, gt_dir, out_dir, seed, **kw):
    """Perturbed copies of every gt image as prediction PNGs + json; returns the json path."""
    with open(gt_json) as f:
        gt = json.load(f)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    annotations = []
    for ann in gt["annotations"]:
        gt_ids = read_panoptic_png(os.path.join(gt_dir, ann["file_name"]))
        pred, segments = perturb_panoptic(gt_ids, ann["segments_info"], cat_ids, rng, **kw)
        Image.fromarray(id2rgb(pred)).save(os.path.join(out_dir, ann["file_name"]))
        annotations.append(
            {"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segments}
        )
    path = os.path.join(out_dir, "predictions.json")
    with open(path, "w") as f:
        json.dump({"annotations": annotations}, f)
    return path


def _assert_same(gt_json, pred_json, gt_dir, pred_dir):
    with contextlib.redirect_stdout(io.StringIO()):
        ref = pq_compute(gt_json, pred_json, gt_dir, pred_dir)
    ours = pq_compute_fast(gt_json, pred_json, gt_dir, pred_dir)
    assert list(ours) == list(ref)
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == ref[group]["n"]
        for m in ("pq", "sq", "rq"):
            assert abs(ours[group][m] - ref[group][m]) <= 1e-9, (group, m)
    assert ours["per_class"].keys() == ref["per_class"].keys()
    for c, r in ref["per_class"].items():
        for m in ("pq", "sq", "rq"):
            assert abs(ours["per_class"][c][m] - r[m]) <= 1e-9, (c, m)

    # per-category TP/FP/FN and IoU sums, single-threaded path
    with open(gt_json) as f:
        gt = json.load(f)
    with open(pred_json) as f:
        preds = {a["image_id"]: a for a in json.load(f)["annotations"]}
    categories = {c["id"]: c for c in gt["categories"]}
    pairs = [(a, preds[a["image_id"]]) for a in gt["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        ref_stat = pq_compute_single_core(0, copy.deepcopy(pairs), gt_dir, pred_dir, categories)
    stat = PQStatFast(categories)
    for g, p in pairs:
        stat.update(
            read_panoptic_png(os.path.join(gt_dir, g["file_name"])),
            g["segments_info"],
            read_panoptic_png(os.path.join(pred_dir, p["file_name"])),
            p["segments_info"],
            image_id=g["image_id"],
        )
    for c, s in stat.per_category().items():
        r = ref_stat.pq_per_cat[c]
        assert (s["tp"], s["fp"], s["fn"]) == (r.tp, r.fp, r.fn), c
        assert abs(s["iou"] - r.iou) <= 1e-9, c
    return ours


@pytest.mark.parametrize(
    "seed,kw", [(0, {}), (1, {"op_prob": 0.03}), (2, {"op_prob": 0.2, "max_shift": 2})]
)
def test_tiny_set_perturbations(panoptic_gt, tmp_path, eval_ops_route, seed, kw):
    # eval_ops_route "fallback": OpenCV decoding and lookup-table matching
    _, gt_json, gt_dir = panoptic_gt
    pred_json = _write_predictions(gt_json, gt_dir, str(tmp_path), seed, **kw)
    res = _assert_same(gt_json, pred_json, gt_dir, str(tmp_path))
    assert 0 < res["All"]["pq"] < 1


def test_identity_is_perfect(panoptic_gt):
    _, gt_json, gt_dir = panoptic_gt
    res = _assert_same(gt_json, gt_json, gt_dir, gt_dir)
    # only crowd regions predicted as segments can cost: a second crowd segment of a category
    # is not the ignore region (panopticapi keeps the last one), so it counts as a FP
    assert 0.95 < res["All"]["pq"] < 1.0 and res["All"]["sq"] == pytest.approx(1.0)


def test_real_coco_samples(tmp_path, require_shared):
    real = require_shared("real_samples", "coco_panoptic")
    gt_json, gt_dir = (
        os.path.join(real, "panoptic_examples.json"),
        os.path.join(real, "panoptic_examples"),
    )
    for seed in range(2):
        pred_json = _write_predictions(gt_json, gt_dir, str(tmp_path / str(seed)), seed)
        _assert_same(gt_json, pred_json, gt_dir, str(tmp_path / str(seed)))


def test_synthetic_panoptic_val(tmp_path):
    from detectron2.data import MetadataCatalog

    from d2ext.data import synthetic

    synthetic.ensure_synthetic_generated("synth_panoptic_val")
    meta = MetadataCatalog.get("synth_panoptic_val")
    pred_json = _write_predictions(meta.panoptic_json, meta.panoptic_root, str(tmp_path), 0)
    _assert_same(meta.panoptic_json, pred_json, meta.panoptic_root, str(tmp_path))


# ---- hand-made cases of panopticapi's rules -------------------------------------------------
CATS = {1: {"id": 1, "isthing": 1}, 2: {"id": 2, "isthing": 1}, 3: {"id": 3, "isthing": 0}}


def _stats(gt, gt_segs, pred, pred_segs):
    gt, pred = np.asarray(gt), np.asarray(pred)
    for s in gt_segs:
        s.setdefault("area", int((gt == s["id"]).sum()))
        s.setdefault("iscrowd", 0)
    st = panoptic_image_stats(gt, gt_segs, pred, pred_segs, CATS, image_id=42)
    return {int(c): (float(i), int(t), int(p), int(n)) for c, i, t, p, n in zip(*st)}


def test_iou_exactly_half_is_not_a_match():
    gt = [[1, 1, 1, 1]]
    pred = [[5, 5, 0, 0]]  # I=2, U=4 minus 0 void
    s = _stats(gt, [{"id": 1, "category_id": 1}], pred, [{"id": 5, "category_id": 1}])
    assert s[1] == (0.0, 0, 1, 1)


def test_void_overlap_leaves_the_union_and_ignores_predictions():
    gt = [[1, 1, 0, 0, 0]]
    pred = [[5, 5, 5, 6, 6]]
    s = _stats(
        gt,
        [{"id": 1, "category_id": 1}],
        pred,
        [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 2}],
    )
    assert s[1] == (1.0, 1, 0, 0)  # IoU = 2 / (3 + 2 - 2 - 1)
    assert 2 not in s  # pred 6 lies on VOID only: not a FP


def test_last_crowd_segment_of_a_category_is_the_ignore_region():
    gt = [[1, 1, 2, 2, 3, 3]]
    gt_segs = [
        {"id": 1, "category_id": 2, "iscrowd": 1},
        {"id": 2, "category_id": 2, "iscrowd": 1},
        {"id": 3, "category_id": 1},
    ]
    pred = [[7, 7, 8, 8, 3, 3]]
    s = _stats(
        gt,
        gt_segs,
        pred,
        [{"id": 7, "category_id": 2}, {"id": 8, "category_id": 2}, {"id": 3, "category_id": 1}],
    )
    assert s[2] == (0.0, 0, 1, 0)  # 7 covers the first crowd (not the one kept): FP; 8 ignored
    assert s[1] == (1.0, 1, 0, 0)


def test_gt_ids_missing_from_json_are_ignored_and_json_area_is_used():
    gt = [[1, 1, 9, 9]]
    pred = [[5, 5, 5, 5]]
    s = _stats(gt, [{"id": 1, "category_id": 1, "area": 2}], pred, [{"id": 5, "category_id": 1}])
    assert s[1] == (0.0, 0, 1, 1)  # IoU 2 / 4: the unlisted gt id 9 still counts in A_pred
    s = _stats(gt, [{"id": 1, "category_id": 1, "area": 1}], pred, [{"id": 5, "category_id": 1}])
    assert s[1] == (2 / 3, 1, 0, 0)  # json area 1 (not the 2 pixels) enters the union


def test_unused_category_and_empty_groups():
    stat = PQStatFast(CATS)
    stat.update(
        np.array([[1, 1]]),
        [{"id": 1, "category_id": 1, "area": 2, "iscrowd": 0}],
        np.array([[4, 4]]),
        [{"id": 4, "category_id": 1}],
    )
    res = stat.results()
    assert res["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0} and res["All"]["n"] == 1
    assert np.isnan(res["Stuff"]["pq"]) and res["Stuff"]["n"] == 0  # panopticapi: ZeroDivisionError


def test_bad_predictions_name_image_and_segment():
    gt = np.array([[1, 1, 0]])
    gt_segs = [{"id": 1, "category_id": 1, "area": 2, "iscrowd": 0}]
    with pytest.raises(KeyError, match=r"image_id=42.*\[6\].*in the PNG but not in segments_info"):
        panoptic_image_stats(
            gt, gt_segs, np.array([[5, 6, 0]]), [{"id": 5, "category_id": 1}], CATS, 42
        )
    with pytest.raises(KeyError, match=r"image_id=42.*\[7\].*in segments_info but not in the PNG"):
        panoptic_image_stats(
            gt,
            gt_segs,
            np.array([[5, 5, 0]]),
            [{"id": 5, "category_id": 1}, {"id": 7, "category_id": 1}],
            CATS,
            42,
        )
    with pytest.raises(KeyError, match=r"image_id=42.*segment id 5 has unknown category_id 99"):
        panoptic_image_stats(
            gt, gt_segs, np.array([[5, 5, 0]]), [{"id": 5, "category_id": 99}], CATS, 42
        )
    with pytest.raises(ValueError, match=r"image_id=42.*one size"):
        panoptic_image_stats(
            gt, gt_segs, np.array([[5, 5]]), [{"id": 5, "category_id": 1}], CATS, 42
        )
    with pytest.raises(ValueError, match=r"image_id=42.*outside"):
        panoptic_image_stats(
            gt, gt_segs, np.array([[-1, 5, 5]]), [{"id": 5, "category_id": 1}], CATS, 42
        )
    with pytest.raises(ValueError, match=r"image_id=42: predicted segment id 0"):
        panoptic_image_stats(
            gt, gt_segs, np.array([[0, 0, 0]]), [{"id": 0, "category_id": 1}], CATS, 42
        )


def test_missing_prediction_and_folder(panoptic_gt, tmp_path):
    _, gt_json, gt_dir = panoptic_gt
    pred_json = tmp_path / "p.json"
    pred_json.write_text(json.dumps({"annotations": []}))
    with pytest.raises(KeyError, match="no prediction for the image with id: 7"):
        pq_compute_fast(gt_json, str(pred_json), gt_dir, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="doesn't exist"):
        pq_compute_fast(gt_json, str(pred_json), gt_dir, str(tmp_path / "nope"))


@pytest.mark.skipif(not extension_available(), reason="d2ext._C not built")
def test_image_stats_same_with_and_without_the_extension(without_eval_ops):
    rng = np.random.default_rng(5)
    gt = rng.integers(1, 6, size=(6, 8)).repeat(10, 0).repeat(5, 1)
    gt[:4] = 0
    gt[5:9, :10] = 77  # an id not in segments_info: ignored
    pred = np.roll(gt, 1, axis=1).astype(np.int32)
    pred[pred == 77] = 2
    pred[10:12] = 9
    cats = {c: {"id": c, "isthing": int(c < 4)} for c in range(1, 6)}
    gt_segs = [
        {"id": i, "category_id": i, "area": int((gt == i).sum()), "iscrowd": int(i == 5)}
        for i in range(1, 6)
    ]
    pred_segs = [{"id": i, "category_id": i} for i in range(1, 6)] + [{"id": 9, "category_id": 3}]
    fast = panoptic_image_stats(gt, gt_segs, pred, pred_segs, cats, 1)
    with without_eval_ops():
        ref = panoptic_image_stats(gt, gt_segs, pred, pred_segs, cats, 1)
    for a, b in zip(fast, ref):
        assert np.array_equal(a, b)
    assert fast.tp.sum() > 0 and fast.fp.sum() > 0
    # the errors are the same on both paths
    for route in (contextlib.nullcontext, without_eval_ops):
        with route():
            with pytest.raises(
                KeyError, match=r"image_id=3.*\[5, 9\].*in the PNG but not in segments_info"
            ):
                panoptic_image_stats(gt, gt_segs, pred, pred_segs[:4], cats, 3)
            with pytest.raises(ValueError, match=r"image_id=3.*outside"):
                panoptic_image_stats(gt, gt_segs, pred - 1, pred_segs, cats, 3)
