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

from d2ext.evaluation import FastCOCOEvaluator
from d2ext.evaluation.synthetic_predictions import instance_predictions_from_gt


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
    with open(tmp_path / "d2" / "coco_instances_results.json") as f1, open(
        tmp_path / "ours" / "coco_instances_results.json"
    ) as f2:
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
            inst.pred_boxes.tensor[-1] += torch.tensor([-30.0, -20.0, 90.0, 70.0])  # outside the image
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
    synthetic = pytest.importorskip("d2ext.data.synthetic")
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


def test_keypoints_match_d2(tmp_path):
    rng = np.random.default_rng(9)
    images, anns, pairs = [], [], []
    for i in range(6):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 64, "width": 80})
        kps, boxes = [], []
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(0, 50), rng.uniform(0, 35)
            w, h = rng.uniform(8, 30), rng.uniform(8, 28)
            pts = np.c_[rng.uniform(x0, x0 + w, 3), rng.uniform(y0, y0 + h, 3), rng.integers(0, 3, 3)]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "keypoints": pts.ravel().tolist(),
                    "num_keypoints": int((pts[:, 2] > 0).sum()),
                }
            )
            kps.append(np.c_[pts[:, :2] + 0.5 + rng.normal(0, 1.5, (3, 2)), np.ones(3)])
            boxes.append([x0, y0, x0 + w, y0 + h])
        inst = Instances((64, 80))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.from_numpy(rng.uniform(0.1, 1, len(boxes))).float()
        inst.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
        inst.pred_keypoints = torch.tensor(np.stack(kps), dtype=torch.float32)
        pairs.append(({"image_id": i + 1, "height": 64, "width": 80}, {"instances": inst}))
    path = tmp_path / "kp.json"
    cats = [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"], "skeleton": []}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    name = "d2ext_test_eval_keypoints"
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(
        json_file=str(path), thing_classes=["person"], thing_dataset_id_to_contiguous_id={1: 0}
    )

    def fresh():  # D2 shifts pred_keypoints in place by -0.5
        return [
            (
                i,
                {
                    "instances": Instances(
                        o["instances"].image_size,
                        **{
                            k: (v.clone() if torch.is_tensor(v) else v)
                            for k, v in o["instances"].get_fields().items()
                        },
                    )
                },
            )
            for i, o in pairs
        ]

    sigmas = (0.05, 0.1, 0.15)
    ref = _run(COCOEvaluator(name, use_fast_impl=False, kpt_oks_sigmas=sigmas), fresh())
    ours = _run(FastCOCOEvaluator(name, kpt_oks_sigmas=sigmas), fresh())
    assert set(ref) == {"bbox", "keypoints"} and 0 < ref["keypoints"]["AP"] < 100
    _assert_same_results(ours, ref)


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
            assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])) if k != "segmentation" else a[k] == b[k], k
    assert ours.dataset["categories"] == ref.dataset["categories"]
    assert [i["id"] for i in ours.dataset["images"]] == [i["id"] for i in ref.dataset["images"]]
    with pytest.raises(ValueError, match="not in the ground truth"):
        _load_segm_results(gt, [dict(segm[0], image_id=-5)])
