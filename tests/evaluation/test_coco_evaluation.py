"""FastCOCOEvaluator against D2's COCOEvaluator on the official pycocotools COCOeval."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO

from d2ext.data.synthetic.predictions import instance_predictions_from_gt
from d2ext.evaluation import FastCOCOEvaluator
from d2ext.evaluation.coco_evaluation import COCOEvalInputError


def _predictions(dataset, seed, **kw):
    meta = MetadataCatalog.get(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(meta.json_file)
    rng = np.random.default_rng(seed)
    return [
        instance_predictions_from_gt(api, img_id, meta.thing_dataset_id_to_contiguous_id, rng, **kw)
        for img_id in sorted(api.imgs)
    ]


def _run(evaluator, pairs):
    evaluator.reset()
    for inp, out in pairs:
        evaluator.process([inp], [out])
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.evaluate()


def _assert_same_results(ours, ref):
    assert ours.keys() == ref.keys()
    for task in ref:
        assert list(ours[task]) == list(ref[task]), task
        for k, v in ref[task].items():
            if math.isnan(v):
                assert math.isnan(ours[task][k]), (task, k)
            else:
                assert abs(ours[task][k] - v) <= 1e-4, (task, k, ours[task][k], v)


@pytest.mark.parametrize(
    "seed,kw", [(0, {"jitter": 0.7}), (1, {"jitter": 1.5, "drop_prob": 0.3}), (2, {"jitter": 4.0})]
)
def test_same_ap_and_files_as_d2(coco_gt, tmp_path, seed, kw):
    pairs = _predictions(coco_gt, seed, **kw)
    ref = _run(COCOEvaluator(coco_gt, output_dir=str(tmp_path / "d2"), use_fast_impl=False), pairs)
    ours = _run(FastCOCOEvaluator(coco_gt, output_dir=str(tmp_path / "ours")), pairs)
    assert set(ref) == {"bbox", "segm"} and "AP-thing5" in ref["segm"]
    _assert_same_results(ours, ref)
    with (
        open(tmp_path / "d2" / "coco_instances_results.json") as f1,
        open(tmp_path / "ours" / "coco_instances_results.json") as f2,
    ):
        assert json.load(f1) == json.load(f2)
    assert (tmp_path / "ours" / "instances_predictions.pth").exists()


@pytest.mark.parametrize("max_dets", [5, 200])
def test_max_dets_per_image(coco_gt, max_dets):
    pairs = _predictions(coco_gt, 3, max_false_positives=8)
    ref = _run(COCOEvaluator(coco_gt, use_fast_impl=False, max_dets_per_image=max_dets), pairs)
    ours = _run(FastCOCOEvaluator(coco_gt, max_dets_per_image=max_dets), pairs)
    _assert_same_results(ours, ref)


def test_empty_masks_boxes_outside_and_no_detections(coco_gt):
    pairs = _predictions(coco_gt, 4)
    for i, (_, out) in enumerate(pairs):
        inst = out["instances"]
        if i == 0:
            out["instances"] = inst[:0]  # an image without detections
        elif len(inst):
            inst.pred_masks[0] = False  # an all-zero mask
            inst.pred_boxes.tensor[-1] += torch.tensor(
                [-30.0, -20.0, 90.0, 70.0]
            )  # outside the image
    ref = _run(COCOEvaluator(coco_gt, use_fast_impl=False), pairs)
    ours = _run(FastCOCOEvaluator(coco_gt), pairs)
    _assert_same_results(ours, ref)


def test_no_predictions_at_all(coco_gt):
    pairs = [(i, {"instances": o["instances"][:0]}) for i, o in _predictions(coco_gt, 5)]
    ref = _run(COCOEvaluator(coco_gt, use_fast_impl=False), pairs)
    ours = _run(FastCOCOEvaluator(coco_gt), pairs)
    assert list(ref) == ["bbox"] and math.isnan(ref["bbox"]["AP"])  # D2: NaN, "no predictions"
    _assert_same_results(ours, ref)


def test_bad_inputs_name_image_and_field(coco_gt):
    ((inp, out),) = _predictions(coco_gt, 6)[1:2]
    ev = FastCOCOEvaluator(coco_gt)
    ev.reset()
    inst = out["instances"]
    assert len(inst) > 1
    bad = inst[:]
    bad.scores = bad.scores.clone()
    bad.scores[1] = float("nan")
    with pytest.raises(ValueError, match=rf"image_id={inp['image_id']}.*scores.*\[1\]"):
        ev.process([inp], [{"instances": bad}])
    bad = inst[:]
    bad.pred_boxes = Boxes(bad.pred_boxes.tensor.clone())
    bad.pred_boxes.tensor[0, 2] = float("inf")
    with pytest.raises(ValueError, match=rf"image_id={inp['image_id']}.*pred_boxes"):
        ev.process([inp], [{"instances": bad}])
    with pytest.raises(ValueError, match=rf"image_id={inp['image_id']}.*pred_masks.*height, width"):
        ev.process([dict(inp, height=inp["height"] + 1)], [out])
    bad = inst[:]
    bad.pred_masks = bad.pred_masks[:, None]  # (N, 1, H, W) mask logits are not accepted
    with pytest.raises(ValueError, match="pred_masks must be \\(N, H, W\\)"):
        ev.process([inp], [{"instances": bad}])
    bad = inst[:]
    bad.pred_classes = torch.full_like(bad.pred_classes, 7)
    ev.process([inp], [{"instances": bad}])
    with pytest.raises(ValueError, match=rf"image_id={inp['image_id']}.*class=7"):
        ev.evaluate()


def test_synthetic_shapes_val():
    from d2ext.data import synthetic

    synthetic.ensure_synthetic_generated("synth_shapes_val")
    pairs = _predictions("synth_shapes_val", 7, jitter=2.0)[:25]
    img_ids = [inp["image_id"] for inp, _ in pairs]
    ref_ev = COCOEvaluator("synth_shapes_val", use_fast_impl=False)
    ours_ev = FastCOCOEvaluator("synth_shapes_val")
    for ev in (ref_ev, ours_ev):
        ev.reset()
        for inp, out in pairs:
            ev.process([inp], [out])
    with contextlib.redirect_stdout(io.StringIO()):
        ref, ours = ref_ev.evaluate(img_ids=img_ids), ours_ev.evaluate(img_ids=img_ids)
    assert 10 < ref["segm"]["AP"] < 95
    _assert_same_results(ours, ref)


def test_evaluate_twice_leaves_predictions_intact(coco_gt):
    pairs = _predictions(coco_gt, 8)
    ev = FastCOCOEvaluator(coco_gt)
    first = _run(ev, pairs)
    stored = [dict(r) for p in ev._predictions for r in p["instances"]]
    with contextlib.redirect_stdout(io.StringIO()):
        second = ev.evaluate()  # D2's remaps its stored category ids in place: a second call fails
    _assert_same_results(second, first)
    assert stored == [r for p in ev._predictions for r in p["instances"]]


# ---- keypoints: pycocotools' COCOeval, D2's numbers bit for bit --------------------------------
KP_CATS = (1, 4, 7)  # dataset ids; 7 has no ground truth in _keypoint_set's default


def _register_json(name, path, data, class_ids):
    path.write_text(json.dumps(data))
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(
        json_file=str(path),
        thing_classes=[f"kp{c}" for c in class_ids],
        thing_dataset_id_to_contiguous_id={c: i for i, c in enumerate(class_ids)},
    )
    return name


def _keypoint_set(tmp_path, seed, gt_cats=(1, 4), num_kp=3, num_images=8):
    """(json dict, make_pairs): people-like objects with ``num_kp`` keypoints of the categories
    ``gt_cats`` (some crowd, image 2 without any), and predictions of every category of KP_CATS
    near them; ``make_pairs()`` gives fresh (input, output) pairs (D2 shifts pred_keypoints in
    place)."""
    rng = np.random.default_rng(seed)
    images, anns, preds = [], [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 64, "width": 80})
        boxes, kps, classes = [], [], []
        for _ in range(0 if i == 2 else int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(0, 50), rng.uniform(0, 35)
            w, h = rng.uniform(8, 30), rng.uniform(8, 28)
            pts = np.c_[
                rng.uniform(x0, x0 + w, num_kp),
                rng.uniform(y0, y0 + h, num_kp),
                rng.integers(0, 3, num_kp),
            ]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.choice(gt_cats)),
                    "iscrowd": int(rng.random() < 0.1),
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "keypoints": pts.ravel().tolist(),
                    "num_keypoints": int((pts[:, 2] > 0).sum()),
                }
            )
            for _ in range(int(rng.integers(1, 3))):
                kps.append(
                    np.c_[pts[:, :2] + 0.5 + rng.normal(0, 1.5, (num_kp, 2)), np.ones(num_kp)]
                )
                boxes.append([x0, y0, x0 + w, y0 + h])
                classes.append(int(rng.integers(0, len(KP_CATS))))
        inst = Instances((64, 80))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.from_numpy(rng.uniform(0.1, 1, len(boxes))).float()
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        inst.pred_keypoints = torch.tensor(np.array(kps), dtype=torch.float32).reshape(
            -1, num_kp, 3
        )
        preds.append(({"image_id": i + 1, "height": 64, "width": 80}, inst))
    cats = [
        {"id": c, "name": f"kp{c}", "keypoints": [f"k{j}" for j in range(num_kp)], "skeleton": []}
        for c in KP_CATS
    ]

    def make_pairs():
        return [
            (
                inp,
                {
                    "instances": Instances(
                        inst.image_size, **{k: v.clone() for k, v in inst.get_fields().items()}
                    )
                },
            )
            for inp, inst in preds
        ]

    return {"images": images, "annotations": anns, "categories": cats}, make_pairs


def _assert_identical_results(ours, ref):
    """Same tasks, same metric names in the same order, bit-identical values (NaN as NaN)."""
    assert list(ours) == list(ref)
    for task in ref:
        assert list(ours[task]) == list(ref[task]), task
        for k, v in ref[task].items():
            assert ours[task][k] == v or (math.isnan(v) and math.isnan(ours[task][k])), (
                task,
                k,
                ours[task][k],
                v,
            )


@pytest.mark.parametrize("seed,max_dets", [(0, 100), (1, 100), (2, 50)])
@pytest.mark.parametrize(
    "gt_cats", [(1, 4), (1, 4, 7)], ids=["empty-gt-category", "all-categories"]
)
def test_keypoints_identical_to_d2(tmp_path, seed, max_dets, gt_cats):
    data, make_pairs = _keypoint_set(tmp_path, seed, gt_cats)
    name = _register_json("d2ext_test_eval_keypoints", tmp_path / "kp.json", data, KP_CATS)
    # max_dets != 100: D2 switches to its COCOevalMaxDets, whose keypoint summary is COCOeval's
    kw = {"kpt_oks_sigmas": (0.05, 0.1, 0.15), "max_dets_per_image": max_dets}
    ref = _run(COCOEvaluator(name, use_fast_impl=False, **kw), make_pairs())
    ours = _run(FastCOCOEvaluator(name, **kw), make_pairs())
    assert set(ref) == {"bbox", "keypoints"} and 0 < ref["keypoints"]["AP"] < 100
    # the per-category table lists every category; one without ground truth has no AP (NaN)
    assert [k for k in ref["keypoints"] if k.startswith("AP-")] == [f"AP-kp{c}" for c in KP_CATS]
    assert math.isnan(ref["keypoints"]["AP-kp7"]) == (7 not in gt_cats)
    _assert_identical_results({"keypoints": ours["keypoints"]}, {"keypoints": ref["keypoints"]})
    _assert_same_results(ours, ref)


def _raised(evaluator, pairs):
    try:
        _run(evaluator, pairs)
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return e
    return None


def test_bad_inputs_raise_the_exception_types_of_d2(tmp_path):
    """Ground truth and settings COCOeval cannot score raise what D2's COCOEvaluator raises."""
    data, make_pairs = _keypoint_set(tmp_path, 0)
    cases = {}
    # more OKS sigmas than keypoints: D2 asserts
    cases["sigmas"] = (data, {"kpt_oks_sigmas": (0.05, 0.1, 0.15, 0.2)}, make_pairs, AssertionError)

    # a predicted class the dataset does not have (D2's test_unknown_category)
    def unknown_class():
        pairs = make_pairs()
        pairs[0][1]["instances"].pred_classes[:] = len(KP_CATS)
        return pairs

    cases["class"] = (data, {}, unknown_class, AssertionError)

    # results for an image the ground truth does not have: pycocotools' loadRes asserts
    def unknown_image():
        return [
            (dict(inp, image_id=99), out) if i == 0 else (inp, out)
            for i, (inp, out) in enumerate(make_pairs())
        ]

    cases["image"] = (data, {}, unknown_image, AssertionError)
    # ground-truth annotations without fields pycocotools' COCOeval reads
    for field, value in (("num_keypoints", None), ("iscrowd", None), ("area", 0)):
        edited = json.loads(json.dumps(data))
        for ann in edited["annotations"][1:3]:
            ann.pop(field)
            if value is not None:
                ann["iscrowd"] = value  # a non-crowd annotation needs its area
        cases[field] = (edited, {}, make_pairs, KeyError)
    for case, (gt, kwargs, pairs, expected) in cases.items():
        name = _register_json(f"d2ext_test_eval_bad_{case}", tmp_path / f"{case}.json", gt, KP_CATS)
        kwargs = {"kpt_oks_sigmas": (0.05, 0.1, 0.15), **kwargs}
        ref = _raised(COCOEvaluator(name, use_fast_impl=False, **kwargs), pairs())
        ours = _raised(FastCOCOEvaluator(name, **kwargs), pairs())
        assert type(ref) is expected, (case, ref)
        assert isinstance(ours, expected), (case, ours)


def test_unknown_category_is_an_assertion_error_with_a_clear_message(coco_gt):
    """D2's upstream test_unknown_category: classes 10 and 80 on a dataset with fewer classes."""
    ((inp, out),) = _predictions(coco_gt, 6)[1:2]
    pred = Instances((48, 61))
    pred.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 10.0, 12.0], [5.0, 5.0, 20.0, 30.0]]))
    pred.scores = torch.tensor([0.9, 0.3])
    pred.pred_classes = torch.tensor([10, 80])
    for evaluator in (COCOEvaluator(coco_gt, use_fast_impl=False), FastCOCOEvaluator(coco_gt)):
        evaluator.reset()
        evaluator.process([inp], [{"instances": pred}])
        with pytest.raises(AssertionError):
            evaluator.evaluate()
    with pytest.raises(
        COCOEvalInputError, match=rf"image_id={inp['image_id']}.*class=10.*3 classes"
    ):
        evaluator.evaluate()
    assert issubclass(COCOEvalInputError, ValueError)


def test_batched_segm_results_equal_load_res(coco_gt):
    """The segm results COCO built with batched area/box calls equals faster-coco-eval's loadRes."""
    from faster_coco_eval import COCO as FastCOCO

    from d2ext.evaluation.coco_evaluation import _load_segm_results, instances_to_coco_json_fast

    meta = MetadataCatalog.get(coco_gt)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = FastCOCO(meta.json_file)
    results = []
    for inp, out in _predictions(coco_gt, 3, jitter=1.0):
        results += instances_to_coco_json_fast(out["instances"], inp["image_id"])
    segm = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        ref = gt.loadRes([dict(r) for r in segm])
    ours = _load_segm_results(gt, [dict(r) for r in segm])
    assert len(ours.anns) == len(ref.anns) > 0
    for i, a in ref.anns.items():
        b = ours.anns[i]
        assert a.keys() == b.keys()
        for k in a:
            assert (
                np.array_equal(np.asarray(a[k]), np.asarray(b[k]))
                if k != "segmentation"
                else a[k] == b[k]
            ), k
    assert ours.dataset["categories"] == ref.dataset["categories"]
    assert [i["id"] for i in ours.dataset["images"]] == [i["id"] for i in ref.dataset["images"]]
    with pytest.raises(ValueError, match="not in the ground truth"):
        _load_segm_results(gt, [dict(segm[0], image_id=-5)])
