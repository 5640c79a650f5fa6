"""WIDER FACE evaluation (d2ext.evaluation.widerface_evaluation): hand-computed APs (ignored
faces, the +1-pixel IoU at exactly 0.5, whole-set score normalisation), a per-detection loop
reference on random sets, the real val ground truth, the official txt layout, the D2 evaluator
(== the official-input function, NME) and its dispatch."""

import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from d2ext.config import add_d2ext_config
from d2ext.data.wider_face_mat import SUBSETS, read_wider_gt_mats, write_wider_gt_mats
from d2ext.evaluation import (
    WiderFaceEvaluator,
    build_evaluator,
    evaluate_wider,
    evaluate_wider_official,
    write_wider_predictions,
)
from d2ext.evaluation.widerface_evaluation import read_wider_predictions, wider_box_overlaps

# The official evaluation.py (biubug6/Pytorch_Retinaface, its bbox_overlaps run as plain
# Python) on the real val ground truth with every face predicted at its own box, scored
# 1 - 0.5 * j / F for face j of F: not 1.0, as a box of negative width (never matched) and a
# duplicated box (its prediction matches the first copy again) leave false positives.
OFFICIAL_PERFECT_VAL = {
    "easy": 0.9999234122884763,
    "medium": 0.9999532492925389,
    "hard": 0.999910998262358,
}


def _gt(event, file, boxes, **keep):
    return {
        "event": event,
        "file": file,
        "boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        "keep": {s: np.asarray(k, dtype=np.int64) for s, k in keep.items()},
    }


# two images: faces A, B, C (B outside "easy") and D, all 10 x 10 pixels with the +1
GT = [
    _gt("0--E", "one", [[0, 0, 9, 9], [20, 0, 9, 9], [40, 0, 9, 9]], easy=[0, 2], hard=[0, 1, 2]),
    _gt("0--E", "two", [[0, 0, 9, 9]], easy=[0], hard=[0]),
]
# raw scores in [0.25, 0.75]: whole-set normalisation maps them to 1, .875, .75, .625, .5, 0
PREDS = {
    ("0--E", "one"): np.array(
        [
            [0, 0, 9, 9, 0.75],  # A
            [20, 0, 9, 9, 0.6875],  # B: ignored in easy
            [100, 100, 9, 9, 0.625],  # nothing: false positive
            [1, 0, 9, 9, 0.5625],  # A again: false positive
        ]
    ),
    ("0--E", "two"): np.array([[0, 0, 9, 9, 0.5], [50, 50, 9, 9, 0.25]]),  # D, false positive
}


def test_box_overlaps_plus_one():
    # 10 x 10 pixel boxes overlapping on 5 columns: 50 / 150
    assert wider_box_overlaps([[0, 0, 9, 9]], [[5, 0, 14, 9]])[0, 0] == pytest.approx(1 / 3)
    # touching at one pixel column still overlaps with the +1; one column apart does not
    assert wider_box_overlaps([[0, 0, 4, 4]], [[4, 0, 8, 4], [5, 0, 9, 4]]).tolist() == [
        [5 / 45, 0.0]
    ]
    assert wider_box_overlaps(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


def test_hand_computed_ap():
    """easy (A, C, D kept): by threshold, proposals / recalled = 1/1, 1/1 (B dropped), 2/1,
    3/1, 4/2, 5/2 -> AP = 1/3 * 1 + 1/3 * 0.5 = 0.5. hard (B kept too): 1/1, 2/2, 3/2, 4/2,
    5/3, 6/3 of 4 faces -> AP = 0.25 + 0.25 + 0.25 * 0.6 = 0.65."""
    aps = evaluate_wider(PREDS, GT)
    assert list(aps) == ["easy", "hard"]
    assert aps["easy"] == pytest.approx(0.5, abs=1e-15)
    assert aps["hard"] == pytest.approx(0.65, abs=1e-15)
    # the input order of an image's detections does not matter (sorted by score)
    shuffled = {k: v[::-1] for k, v in PREDS.items()}
    assert evaluate_wider(shuffled, GT) == aps


def test_norm_score_over_the_whole_set():
    """A detection scoring 1000 in an image outside the ground truth squeezes every other
    normalised score below 0.001, the last threshold but one: only threshold 0 has proposals,
    AP = final precision * final recall (easy 0.4 * 2/3, hard 0.5 * 3/4). Normalising per image
    would leave the hand-computed 0.5 / 0.65."""
    preds = {**PREDS, ("9--X", "outside"): np.array([[0, 0, 5, 5, 1000.25]])}
    aps = evaluate_wider(preds, GT)
    assert aps["easy"] == pytest.approx(0.4 * 2 / 3, abs=1e-15)
    assert aps["hard"] == pytest.approx(0.5 * 3 / 4, abs=1e-15)
    # the official bounds start at min 1 and max 0: scores all above 1000 normalise from 1, so
    # they all land above the first threshold 0.999 (from their own minimum: AP 0.5 again)
    high = {k: v + [0, 0, 0, 0, 1000] for k, v in PREDS.items()}
    assert evaluate_wider(high, GT)["easy"] == pytest.approx(0.4 * 2 / 3, abs=1e-15)


@pytest.mark.parametrize("h, ap", [(4, 1.0), (3, 0.0)])
def test_iou_exactly_half_is_a_match(h, ap):
    """x y w h = 0 0 9 9 spans 10 x 10 pixels with the +1; a 10 x 5 detection covers exactly
    half of it (IoU 0.5 >= 0.5: matched; continuous IoU would be 36 / 81); 10 x 4 does not."""
    gt = [_gt("0--E", "one", [[0, 0, 9, 9]], easy=[0])]
    assert wider_box_overlaps([[0, 0, 9, 4]], [[0, 0, 9, 9]])[0, 0] == 0.5
    preds = {("0--E", "one"): np.array([[0, 0, 9, h, 0.9], [200, 200, 5, 5, 0.1]])}
    assert evaluate_wider(preds, gt)["easy"] == ap


def test_degenerate_sets():
    gt = [_gt("0--E", "one", [[0, 0, 9, 9]], easy=[0], hard=[])]
    # every score equal: the official divides 0 by 0; here all normalise to 1
    aps = evaluate_wider({("0--E", "one"): np.array([[0, 0, 9, 9, 0.7]])}, gt)
    assert aps["easy"] == 1.0 and np.isnan(aps["hard"])  # no hard face: AP undefined
    # no detections at all
    assert evaluate_wider({}, gt, subsets=["easy"]) == {"easy": 0.0}


def _reference(preds, gt_images, subsets, thresh_num=1000):
    """The protocol one detection and one threshold at a time (independent of the vectorised
    code): whole-set norm, +1 IoU, ignored faces, per-threshold proposal / recall counts."""
    lo = min([1.0] + [p[:, 4].min() for p in preds.values() if len(p)])
    hi = max([0.0] + [p[:, 4].max() for p in preds.values() if len(p)])
    aps = {}
    for s in subsets:
        curve, faces = np.zeros((thresh_num, 2)), 0
        for img in gt_images:
            faces += len(img["keep"][s])
            p = preds.get((img["event"], img["file"]), np.zeros((0, 5)))
            gt = img["boxes"]
            if len(p) == 0 or len(gt) == 0:
                continue
            p = p[np.argsort(-p[:, 4], kind="stable")]
            scores = (p[:, 4] - lo) / (hi - lo)
            x = p[:, :4].copy()
            x[:, 2:] += x[:, :2]
            g = gt.copy()
            g[:, 2:] += g[:, :2]
            kept = np.zeros(len(gt), dtype=bool)
            kept[img["keep"][s]] = True
            recalled, proposals, recall_at = set(), [], []
            for box in x:
                row = [wider_box_overlaps([box], [q])[0, 0] for q in g]
                best = int(np.argmax(row))
                ignored = row[best] >= 0.5 and not kept[best]
                if row[best] >= 0.5 and kept[best]:
                    recalled.add(best)
                proposals.append(not ignored)
                recall_at.append(len(recalled))
            for t in range(thresh_num):
                above = [i for i, sc in enumerate(scores) if sc >= 1 - (t + 1) / thresh_num]
                if above:
                    curve[t] += [sum(proposals[: above[-1] + 1]), recall_at[above[-1]]]
        with np.errstate(invalid="ignore"):
            precision = curve[:, 1] / curve[:, 0]
        recall = curve[:, 1] / faces
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([0.0], precision, [0.0]))
        for i in range(len(mpre) - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        aps[s] = float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    return aps


@pytest.mark.parametrize("seed", range(4))
def test_matches_loop_reference(seed):
    """Random faces, keep-lists and detections near them (tied scores, empty images): the
    vectorised evaluation equals the per-detection loop to the last bit."""
    rng = np.random.default_rng(seed)
    gt_images, preds = [], {}
    for j in range(8):
        n = int(rng.integers(0, 10))
        boxes = np.concatenate([rng.integers(0, 60, (n, 2)), rng.integers(-1, 25, (n, 2))], 1)
        keep = {
            s: np.sort(rng.choice(n, int(rng.integers(0, n + 1)), replace=False)) for s in SUBSETS
        }
        gt_images.append(_gt("1--R", f"r{j}", boxes, **keep))
        m = int(rng.integers(0, 12))
        near = boxes[rng.integers(0, n, m)] + rng.integers(-3, 4, (m, 4)) if n else np.zeros((0, 4))
        dets = np.concatenate([near, rng.integers(0, 60, (2, 4))]).astype(float)
        preds[("1--R", f"r{j}")] = np.column_stack([dets, np.round(rng.random(len(dets)), 1)])
    assert evaluate_wider(preds, gt_images) == _reference(preds, gt_images, SUBSETS)


@pytest.fixture(scope="module")
def real_gt_dir(require_shared):
    return require_shared("real_samples", "wider_face_val_gt")


@pytest.fixture(scope="module")
def real_gt(real_gt_dir):
    return read_wider_gt_mats(real_gt_dir)


def test_real_val_perfect_predictions(real_gt):
    """Every face of the 3226 val images predicted at its own box: the official values (see
    OFFICIAL_PERFECT_VAL); without the unmatchable box and the duplicate, easy and medium are
    exactly 1 and hard misses exactly those two of its 31,958 faces."""
    preds, clean = {}, {}
    for img in real_gt:
        b, n = img["boxes"], len(img["boxes"])
        preds[(img["event"], img["file"])] = np.column_stack([b, 1 - 0.5 * np.arange(n) / n])
        first = np.zeros(n, dtype=bool)  # the first of identical boxes
        first[np.unique(b, axis=0, return_index=True)[1]] = True
        ok = np.flatnonzero((b[:, 2:] >= 0).all(1) & first)
        clean[(img["event"], img["file"])] = np.column_stack([b[ok], 1 - 0.5 * ok / n])
    aps = evaluate_wider(preds, real_gt)
    assert list(aps) == list(SUBSETS)
    for s in SUBSETS:
        assert aps[s] == pytest.approx(OFFICIAL_PERFECT_VAL[s], abs=1e-15)
    aps = evaluate_wider(clean, real_gt)
    assert aps["easy"] == 1.0 and aps["medium"] == 1.0
    assert aps["hard"] == pytest.approx(31956 / 31958, abs=1e-15)


def test_txt_layout_and_reader(tmp_path):
    path = write_wider_predictions(
        str(tmp_path), "0--E", "one", [[1, 2, 3, 4], [5.5, 6, 7, 8]], np.float32([0.25, 0.9])
    )
    assert path == str(tmp_path / "0--E" / "one.txt")
    with open(path) as f:
        text = f.read()
    # test_widerface.py's layout: name, count, then "x y w h score " lines by score
    assert text == "one\n2\n5.5 6 7 8 0.8999999761581421 \n1 2 3 4 0.25 \n"
    write_wider_predictions(str(tmp_path), "0--E", "two", np.zeros((0, 4)), [])
    preds = read_wider_predictions(str(tmp_path))
    assert sorted(preds) == [("0--E", "one"), ("0--E", "two")]
    assert preds[("0--E", "one")].tolist() == [
        [5.5, 6, 7, 8, float(np.float32(0.9))],
        [1, 2, 3, 4, 0.25],
    ]
    assert preds[("0--E", "two")].shape == (0, 5)


def test_official_input_function(tmp_path):
    gt_dir, pred_dir = str(tmp_path / "gt"), str(tmp_path / "pred")
    write_wider_gt_mats(
        gt_dir,
        [{**g, "keep": {s: g["keep"].get(s, g["keep"]["hard"]) for s in SUBSETS}} for g in GT],
    )
    for (event, file), p in PREDS.items():
        write_wider_predictions(pred_dir, event, file, p[:, :4], p[:, 4])
    aps = evaluate_wider_official(pred_dir, gt_dir)
    assert aps == pytest.approx({"easy": 0.5, "medium": 0.65, "hard": 0.65}, abs=1e-15)
    os.remove(os.path.join(pred_dir, "0--E", "two.txt"))
    with pytest.raises(FileNotFoundError, match="1 of the 2 images.*0--E/two.txt"):
        evaluate_wider_official(pred_dir, gt_dir)
    with open(os.path.join(pred_dir, "0--E", "two.txt"), "w") as f:
        f.write("two\n1\n1 2 three 4 0.5\n")
    with pytest.raises(ValueError, match=r"two.txt:3: expected 'x y w h score'"):
        evaluate_wider_official(pred_dir, gt_dir)
    with open(os.path.join(pred_dir, "0--E", "two.txt"), "w") as f:
        f.write("two\n2\n1 2 3 4 0.5\n")
    with pytest.raises(ValueError, match=r"two.txt:2: count '2' but 1 detections"):
        evaluate_wider_official(pred_dir, gt_dir)


# ---------------------------------------------------------------------- the D2 evaluator
KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


@pytest.fixture
def register():
    """register(name, dicts, **metadata) -> name; removed again after the test."""
    names = []

    def _register(name, dicts, **metadata):
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog.list():
                catalog.remove(name)
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(
            evaluator_type="widerface",
            thing_classes=["face"],
            keypoint_names=KEYPOINT_NAMES,
            keypoint_flip_map=(("left_eye", "right_eye"), ("left_mouth", "right_mouth")),
            **metadata,
        )
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _face(xywh, keypoints=None, iscrowd=0):
    kp = np.zeros((5, 3)) if keypoints is None else np.column_stack([keypoints, np.full(5, 2.0)])
    return {
        "bbox": list(map(float, xywh)),
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": iscrowd,
        "keypoints": kp.ravel().tolist(),
    }


def _record(file_name, anns):
    return {
        "file_name": file_name,
        "height": 480,
        "width": 640,
        "image_id": file_name,
        "annotations": anns,
    }


def _output(boxes_xyxy, scores, keypoints=None):
    inst = Instances((480, 640))
    if len(scores) or keypoints is not None:
        inst.pred_boxes = Boxes(torch.as_tensor(np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)))
        inst.scores = torch.as_tensor(np.asarray(scores, np.float32))
        inst.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
    if keypoints is not None:
        kp = torch.as_tensor(np.asarray(keypoints, np.float32).reshape(-1, 5, 2))
        inst.pred_keypoints = torch.cat([kp, torch.ones_like(kp[..., :1])], -1)
    return {"instances": inst}


def _run(evaluator, dicts, outputs):
    evaluator.reset()
    for d, out in zip(dicts, outputs):
        evaluator.process([d], [out])
    return evaluator.evaluate()


EYES = np.array([[12.0, 20], [18, 20], [15, 30], [12, 40], [18, 40]])


@pytest.mark.parametrize("distributed", [False, True])
def test_evaluator_from_dataset_dicts(register, distributed):
    """No wider_gt_dir: one subset "all" of the non-crowd faces (the crowd box is ignored).
    Faces F0 (landmarks), F1 (none), crowd F2 in image a, F3 in image b (no detection).
    Detections by score: F0 (landmarks off by (3, 4): 5 px / sqrt(10 * 40) = 0.25), F0 again
    (false positive, its landmarks unused), F1, F2 (ignored): proposals / recalled 1/1, 2/1,
    3/2 of 3 faces -> AP = 1/3 + 1/3 * 2/3 = 5/9; NME = 25 %."""
    dicts = [
        _record(
            "/data/3--Z/a.jpg",
            [
                _face([10, 10, 10, 40], EYES),
                _face([100, 100, 20, 20]),
                _face([200, 200, 30, 30], iscrowd=1),
            ],
        ),
        _record("/data/3--Z/b.jpg", [_face([300, 300, 20, 20])]),
    ]
    name = register("wider_eval_dicts", dicts)
    outputs = [
        _output(
            [[10, 10, 20, 50], [10.4, 10, 20, 50], [100, 100, 120, 120], [200, 200, 230, 230]],
            [0.9, 0.8, 0.7, 0.6],
            [EYES + [3, 4], EYES + 100, EYES, EYES],
        ),
        _output([], []),
    ]
    res = _run(WiderFaceEvaluator(name, distributed=distributed), dicts, outputs)["widerface"]
    assert list(res) == ["AP_all", "NME"]
    assert res["AP_all"] == pytest.approx(100 * 5 / 9, abs=1e-12)
    assert res["NME"] == pytest.approx(25.0, abs=1e-5)
    # a detector without landmarks (stock RetinaNet): no NME
    plain = [
        {
            "instances": Instances(
                (480, 640),
                **{k: v for k, v in o["instances"].get_fields().items() if k != "pred_keypoints"},
            )
        }
        for o in outputs
    ]
    res = _run(WiderFaceEvaluator(name, distributed=distributed), dicts, plain)["widerface"]
    assert list(res) == ["AP_all"] and res["AP_all"] == pytest.approx(100 * 5 / 9, abs=1e-12)


def _real_subset_run(real_gt, events, seed=0):
    """Dataset dicts and noisy perfect-ish outputs (fractional boxes, float32 scores, false
    positives, landmarks) for the real val images of ``events``."""
    rng = np.random.default_rng(seed)
    images = [g for g in real_gt if g["event"] in events]
    dicts, outputs = [], []
    for g in images:
        b = g["boxes"]
        dicts.append(
            _record(
                f"/wider/val/images/{g['event']}/{g['file']}.jpg",
                [_face(x, np.tile(x[:2] + 2.5, (5, 1))) for x in b],
            )
        )
        boxes = np.concatenate([b, rng.uniform(0, 500, (3, 4))])
        xyxy = np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]) + rng.uniform(
            -2, 2, (len(boxes), 4)
        )
        kp = xyxy[:, None, :2] + rng.uniform(0, 5, (len(boxes), 5, 2))
        outputs.append(_output(xyxy, rng.uniform(0.02, 1, len(boxes)), kp))
    return images, dicts, outputs


def test_evaluator_equals_official_input_function(real_gt, real_gt_dir, register, tmp_path):
    """Two real events: the evaluator's AP (ground truth from wider_gt_dir) equals the
    official-input function on the txt files it wrote and the .mat files of those images."""
    images, dicts, outputs = _real_subset_run(real_gt, ("0--Parade", "1--Handshaking"))
    name = register("wider_eval_real", dicts, wider_gt_dir=real_gt_dir)
    res = _run(WiderFaceEvaluator(name, output_dir=str(tmp_path / "out")), dicts, outputs)
    res = res["widerface"]
    assert list(res) == ["AP_easy", "AP_medium", "AP_hard", "NME"]
    write_wider_gt_mats(str(tmp_path / "gt"), images)
    official = evaluate_wider_official(
        str(tmp_path / "out" / "widerface_txt"), str(tmp_path / "gt")
    )
    assert {s: res[f"AP_{s}"] for s in SUBSETS} == {s: 100 * official[s] for s in SUBSETS}
    assert all(0 < res[f"AP_{s}"] < 100 for s in SUBSETS)
    assert np.isfinite(res["NME"]) and res["NME"] > 0
    assert len(os.listdir(tmp_path / "out" / "widerface_txt" / "1--Handshaking")) == sum(
        g["event"] == "1--Handshaking" for g in images
    )


def test_evaluator_bad_inputs(register):
    dicts = [_record("/data/3--Z/a.jpg", [_face([10, 10, 10, 40])])]
    name = register("wider_eval_bad", dicts)
    evaluator = WiderFaceEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process(dicts, [_output([[10, 10, 20, 50]], [0.9])])
    evaluator.process(dicts, [_output([[10, 10, 20, 50]], [0.9])])
    with pytest.raises(ValueError, match="image 3--Z/a was processed twice"):
        evaluator.evaluate()
    evaluator.reset()
    with pytest.raises(ValueError, match="a.jpg: the model output has no 'instances'"):
        evaluator.process(dicts, [{}])
    with pytest.raises(ValueError, match="a.jpg: non-finite boxes or scores"):
        evaluator.process(dicts, [_output([[10, 10, 20, 50]], [float("nan")])])


def test_dispatch(register):
    name = register("wider_eval_dispatch", [])
    cfg = get_cfg()
    add_d2ext_config(cfg)
    assert isinstance(build_evaluator(cfg, name, output_folder="/tmp/x"), WiderFaceEvaluator)
