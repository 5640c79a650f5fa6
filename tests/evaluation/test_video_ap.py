"""VideoAPEvaluator: hand-built videos with exact AP / IoU values, the official's area and crowd
rules, per-frame Instances -> tracks, the D2 evaluator protocol (several videos, gathering over
ranks, the dispatch, the results json), bad inputs, and random videos against a straightforward
reference (numpy masks, greedy matching, 101-point AP) that shares no code with pycocotools."""

import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances

import d2ext.evaluation.video_ap as video_ap
from d2ext.config import add_d2ext_config
from d2ext.evaluation import VideoAPEvaluator, build_evaluator, instances_to_tracks, video_mask_iou

H, W = 8, 12


def approx(value, **kw):
    """COCOeval's precision is tp / (tp + fp + eps): its 100 is 100 - 3e-14."""
    return pytest.approx(value, **{"abs": 1e-9, **kw})


KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10")


def rect(y0, x0, y1, x1, h=H, w=W):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


A, B = rect(0, 0, 4, 4), rect(4, 8, 8, 12)  # disjoint, 16 px each


def rle(mask):
    return None if mask is None else mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def clip(video_id, tracks, length=None, h=H, w=W):
    """Per-clip dict; ``tracks``: (track_id, category_id, masks per frame or None, iscrowd)."""
    length = length if length is not None else len(tracks[0][2])
    frames = [{"frame_idx": f, "annotations": []} for f in range(length)]
    for tid, cat, masks, crowd in tracks:
        for f, m in enumerate(masks):
            if m is not None:
                ann = {
                    "track_id": tid,
                    "category_id": cat,
                    "iscrowd": crowd,
                    "segmentation": rle(m),
                }
                frames[f]["annotations"].append(ann)
    return {"video_id": video_id, "length": length, "height": h, "width": w, "frames": frames}


def track(score, cat, masks):
    return {"score": score, "category_id": cat, "segmentations": [rle(m) for m in masks]}


@pytest.fixture
def register():
    """register(clips, **metadata) -> a registered per-clip dataset name; removed afterwards."""
    names = []

    def _register(clips, **metadata):
        name = f"d2ext_test_video_ap_{len(names)}"
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog.list():
                catalog.remove(name)
        DatasetCatalog.register(name, lambda: clips)
        meta = {"evaluator_type": "youtube_vis", "thing_classes": ["a", "b", "c"], **metadata}
        MetadataCatalog.get(name).set(**meta)
        names.append(name)
        return name

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def run(evaluator, clips, predictions):
    evaluator.reset()
    for c, tracks in zip(clips, predictions):
        evaluator.process([c], [{"tracks": tracks}])
    return evaluator.evaluate()


def evaluate(register, clips, predictions, **metadata):
    name = register(clips, **metadata)
    return run(VideoAPEvaluator(name, distributed=False), clips, predictions)["segm_vis"]


# ---------------------------------------------------------------- spatio-temporal IoU
def test_video_mask_iou_by_hand():
    gt = [rle(m) for m in (A, A, None, A)]
    cases = [
        ((A, A, None, A), 1.0),  # the empty frame of both adds nothing
        ((A, None, None, A), 2 / 3),  # a missed frame: its 16 px stay in the union
        ((A, A, A, A), 48 / 64),  # a frame the gt lacks adds the prediction's 16 px
        ((A, A, B, B), 32 / (32 + 16 + 32)),
        ((rect(0, 0, 4, 2), A, None, None), (8 + 16) / (16 * 3)),  # half a mask, then missed
        ((None, None, None, None), 0.0),
    ]
    for masks, expected in cases:
        assert video_mask_iou([[rle(m) for m in masks]], [gt])[0, 0] == expected
    empty = video_mask_iou([[None]], [[None]])
    assert empty.shape == (1, 1) and empty[0, 0] == 0.0
    assert video_mask_iou([], [gt]).shape == (0, 1)
    with pytest.raises(ValueError, match="equal lengths"):
        video_mask_iou([[rle(A)]], [gt])


# ---------------------------------------------------------------- hand-built APs
def test_perfect_track(register):
    clips = [clip(1, [(7, 0, [A, A, None, A], 0), (9, 1, [B, B, B, B], 0)])]
    preds = [[track(0.9, 0, [A, A, None, A]), track(0.3, 1, [B, B, B, B])]]
    res = evaluate(register, clips, preds)
    for k in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AP-a", "AP-b"):
        assert res[k] == approx(100), k
    assert math.isnan(res["APm"]) and math.isnan(res["APl"]) and math.isnan(res["AP-c"])


def test_track_switching_object_scores_lower(register):
    gt = [(1, 0, [A] * 10, 0), (2, 0, [B] * 10, 0)]
    halfway = [A] * 5 + [B] * 5  # IoU 80 / 240 with either object: no match at 0.5
    assert video_mask_iou([[rle(m) for m in halfway]], [[rle(A)] * 10])[0, 0] == 1 / 3
    res = evaluate(register, [clip(1, gt)], [[track(0.9, 0, halfway)]])
    assert res["AP"] == 0 and res["AR10"] == 0
    late = [A] * 7 + [B] * 3  # IoU with A 112 / 208 = 7 / 13: a match at 0.50 only
    assert video_mask_iou([[rle(m) for m in late]], [[rle(A)] * 10])[0, 0] == 7 / 13
    res = evaluate(register, [clip(1, gt)], [[track(0.9, 0, late)]])
    # one of two objects found at IoU 0.5: precision 1 up to recall 0.5 (51 of 101 points)
    assert res["AP50"] == approx(100 * 51 / 101)
    assert res["AP"] == approx(100 * 51 / 101 / 10)
    assert res["AP75"] == 0 and res["AR1"] == approx(5.0)


def test_missed_frame(register):
    gt = [(3, 0, [A] * 6, 0)]
    missed = [A, A, None, A, A, A]  # IoU 5 / 6: matched at 0.50 ... 0.80 (7 of 10 thresholds)
    res = evaluate(register, [clip(1, gt)], [[track(0.5, 0, missed)]])
    assert res["AP"] == approx(70) and res["AP50"] == approx(100) and res["AP75"] == approx(100)
    assert res["AR1"] == approx(70)
    # a frame the object is absent from: the same loss for a prediction there, none if absent
    gt = [(3, 0, [A] * 5 + [None], 0)]
    res = evaluate(register, [clip(1, gt)], [[track(0.5, 0, [A] * 6)]])
    assert res["AP"] == approx(70)
    res = evaluate(register, [clip(1, gt)], [[track(0.5, 0, [A] * 5 + [None])]])
    assert res["AP"] == approx(100)


def test_false_positive_track(register):
    clips = [clip(1, [(1, 0, [A] * 3, 0)])]
    res = evaluate(register, clips, [[track(0.9, 0, [A] * 3), track(0.5, 0, [B] * 3)]])
    assert res["AP"] == approx(100) and res["AR1"] == approx(
        100
    )  # ranked below the true track: no cost
    res = evaluate(register, clips, [[track(0.9, 0, [A] * 3), track(0.95, 0, [B] * 3)]])
    assert res["AP"] == approx(50)  # precision 1/2 at every recall
    assert res["AR1"] == 0 and res["AR10"] == approx(100)  # AR@1 keeps the false track only


def test_empty_predictions(register):
    res = evaluate(register, [clip(1, [(1, 0, [A] * 3, 0)])], [[]])
    assert all(res[k] == 0 for k in ("AP", "AP50", "AP75", "APs", "AR1", "AR10"))


def test_video_without_ground_truth(register):
    clips = [clip(1, [(1, 0, [A] * 3, 0)]), clip(2, [], length=3)]
    preds = [[track(0.5, 0, [A] * 3)], [track(0.9, 0, [B] * 3)]]
    res = evaluate(register, clips, preds)
    assert res["AP"] == approx(50) and res["AR10"] == approx(100)
    # no ground truth in any evaluated video: every metric is undefined (NaN, as D2's COCO)
    res = evaluate(register, clips[1:], preds[1:])
    assert all(math.isnan(res[k]) for k in KEYS)


def test_crowd_as_official(register):
    crowd = rect(0, 4, 8, 12)  # 64 px, disjoint from A
    clips = [clip(1, [(1, 0, [A] * 2, 0), (2, 0, [crowd] * 2, 1)])]
    on_crowd = track(0.9, 0, [crowd] * 2)  # matched to the crowd: ignored, not a false positive
    res = evaluate(register, clips, [[on_crowd, track(0.8, 0, [A] * 2)]])
    assert res["AP"] == approx(100) and res["AR10"] == approx(100)  # the crowd is no object to find
    # a prediction inside the crowd: COCO images would ignore it (intersection over prediction
    # = 1); the official video IoU is the plain one, 16 / 64, so it is a false positive
    part = track(0.95, 0, [rect(0, 4, 4, 8)] * 2)
    res = evaluate(register, clips, [[part, on_crowd, track(0.8, 0, [A] * 2)]])
    assert res["AP"] == approx(50)


def test_several_categories(register):
    clips = [clip(1, [(1, 0, [A] * 2, 0), (2, 1, [B] * 2, 0)])]
    preds = [[track(0.9, 0, [A] * 2), track(0.8, 0, [B] * 2), track(0.7, 2, [B] * 2)]]
    res = evaluate(register, clips, preds)
    # "b" found only under the wrong names: AP 0; "c" has no ground truth: not averaged
    assert res["AP-a"] == approx(100) and res["AP-b"] == 0 and math.isnan(res["AP-c"])
    assert res["AP"] == approx(50)


def test_area_is_the_mean_of_non_empty_frames(register):
    h = w = 140
    small, big, empty = rect(0, 0, 4, 4, h, w), rect(0, 0, 130, 130, h, w), rect(0, 0, 0, 0, h, w)
    # the big track: 16900 px on its one non-empty frame -> medium (128^2 <= 16900 < 256^2);
    # counting the absent and the empty frame would make it 5633 px: small
    gt = [(1, 0, [small] * 3, 0), (2, 0, [big, None, empty], 0)]
    res = evaluate(register, [clip(1, gt, h=h, w=w)], [[track(0.9, 0, [small] * 3)]])
    assert res["APs"] == approx(100) and res["APm"] == 0 and math.isnan(res["APl"])
    assert res["AP"] == approx(100 * 51 / 101)


# ---------------------------------------------------------------- Instances -> tracks
def _frame(masks, scores, classes, ids):
    inst = Instances((H, W))
    inst.pred_masks = torch.as_tensor(np.stack(masks))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    inst.pred_track_ids = torch.tensor(ids)
    return inst


def test_instances_to_tracks(register):
    frames = [
        _frame([A, B], [0.5, 0.75], [1, 1], [5, 2]),
        Instances((H, W)),  # no detections, no fields
        _frame([A], [0.25], [2], [5]),
        _frame([B, A, A, B], [0.25, 0.75, 0.1, 0.1], [0, 2, 1, 1], [2, 5, -1, -1]),  # -1: untracked
    ]
    tracks = instances_to_tracks(frames)
    assert [t["track_id"] for t in tracks] == [2, 5]
    two, five = tracks
    assert two["score"] == 0.5 and five["score"] == 0.5  # (0.75 + 0.25) / 2, (0.5+0.25+0.75) / 3
    assert two["category_id"] == 0  # classes 1, 0: a tie goes to the lower id
    assert five["category_id"] == 2  # classes 1, 2, 2: the most frequent
    assert two["segmentations"][1] is None and two["segmentations"][2] is None
    for f, m in ((0, A), (2, A), (3, A)):
        assert np.array_equal(mask_util.decode(five["segmentations"][f]), m)
    gt = [clip(1, [(1, 0, [B, None, None, B], 0), (2, 2, [A, None, A, A], 0)])]
    assert evaluate(register, gt, [tracks])["AP"] == approx(100)
    assert instances_to_tracks([Instances((H, W))] * 2) == []
    with pytest.raises(ValueError, match="frame 0: a track id appears twice"):
        instances_to_tracks([_frame([A, B], [0.5, 0.5], [0, 0], [3, 3])])
    with pytest.raises(ValueError, match="frame 1: masks of size"):
        instances_to_tracks([_frame([A], [0.5], [0], [3]), _frame([A[:4]], [0.5], [0], [3])])
    bare = Instances((H, W), scores=torch.tensor([0.5]))
    with pytest.raises(ValueError, match="frame 0: Instances without pred_masks"):
        instances_to_tracks([bare])


# ---------------------------------------------------------------- the evaluator protocol
def _several_videos(seed=0):
    rng = np.random.default_rng(seed)
    clips, preds = [], []
    for v in range(4):
        n = int(rng.integers(2, 5))
        objects = []
        for _ in range(2):
            (y0, y1), (x0, x1) = sorted(rng.integers(0, H, 2)), sorted(rng.integers(0, W, 2))
            objects.append(rect(y0, x0, y1 + 1, x1 + 1))
        present = rng.random((2, n)) < 0.8
        tracks = [
            (10 * v + i, i % 2, [m if p else None for p in present[i]], 0)
            for i, m in enumerate(objects)
        ]
        clips.append(clip(f"vid{v}", tracks, length=n))
        preds.append([track(float(rng.random()), c, masks[::-1]) for _, c, masks, _ in tracks])
    return clips, preds


def test_evaluator_protocol_and_gathering(register, tmp_path, monkeypatch):
    clips, preds = _several_videos()
    name = register(clips, thing_dataset_id_to_contiguous_id={4: 0, 8: 1, 9: 2})
    cfg = get_cfg()
    add_d2ext_config(cfg)
    evaluator = build_evaluator(cfg, name, output_folder=str(tmp_path))
    assert isinstance(evaluator, VideoAPEvaluator)
    evaluator.reset()
    evaluator.process(clips[:2], [{"tracks": t} for t in preds[:2]])  # a batch of two clips
    evaluator.process(clips[2:], [{"tracks": t} for t in preds[2:]])
    results = evaluator.evaluate()
    assert list(results) == ["segm_vis"]
    res = results["segm_vis"]
    assert list(res)[: len(KEYS)] == list(KEYS) and {"AP-a", "AP-b", "AP-c"} <= set(res)
    single = run(VideoAPEvaluator(name, distributed=False), clips, preds)["segm_vis"]
    assert res == approx(single, nan_ok=True)

    # two ranks, each with half of the videos: rank 0 gathers both halves, rank 1 returns {}
    ranks = [VideoAPEvaluator(name) for _ in range(2)]
    for r, evaluator in enumerate(ranks):
        evaluator.reset()
        for c, t in list(zip(clips, preds))[r::2]:
            evaluator.process([c], [{"tracks": t}])
    monkeypatch.setattr(
        video_ap.comm, "gather", lambda data, dst=0: [e._predictions for e in ranks]
    )
    assert ranks[0].evaluate()["segm_vis"] == approx(single, nan_ok=True)
    monkeypatch.setattr(video_ap.comm, "is_main_process", lambda: False)
    assert ranks[1].evaluate() == {}

    rows = json.loads((tmp_path / "youtube_vis_results.json").read_text())
    assert len(rows) == sum(len(t) for t in preds)
    assert rows[0]["video_id"] == "vid0" and {r["category_id"] for r in rows} <= {4, 8}
    segms = [s for r in rows for s in r["segmentations"]]
    assert None in segms and all(isinstance(s["counts"], str) for s in segms if s)
    assert VideoAPEvaluator(name, distributed=False).evaluate() == {}  # nothing processed


def test_bad_inputs(register):
    clips = [clip(1, [(1, 0, [A] * 2, 0)])]
    name = register(clips)
    ev = VideoAPEvaluator(name, distributed=False)
    ev.reset()
    with pytest.raises(ValueError, match="video_id=1: the model output has no 'tracks'"):
        ev.process(clips, [{"instances": None}])
    with pytest.raises(ValueError, match="video_id=1, track 0: 3 segmentations for 2 frames"):
        ev.process(clips, [{"tracks": [track(0.5, 0, [A] * 3)]}])
    with pytest.raises(ValueError, match=r"track 0, frame 1: mask size \[4, 4\]"):
        ev.process(clips, [{"tracks": [track(0.5, 0, [A, A[:4, :4]])]}])
    with pytest.raises(ValueError, match=r"category_id 3 not in \[0, 3\)"):
        ev.process(clips, [{"tracks": [track(0.5, 3, [A] * 2)]}])
    with pytest.raises(ValueError, match="score nan is not finite"):
        ev.process(clips, [{"tracks": [track(math.nan, 0, [A] * 2)]}])
    with pytest.raises(ValueError, match="video_id=1 was processed twice"):
        run(ev, clips * 2, [[], []])
    with pytest.raises(KeyError, match="video_id=2 is not in dataset"):
        run(ev, [clip(2, [], length=2)], [[]])
    bad = clip(1, [(1, 0, [A] * 2, 0)])
    bad["frames"][1]["annotations"][0]["category_id"] = 1
    name = register([bad])
    with pytest.raises(ValueError, match="video_id=1, frame 1, annotation 0: track 1 changes"):
        run(VideoAPEvaluator(name, distributed=False), [bad], [[]])
    bad = clip(1, [(1, 0, [A] * 2, 0)], length=3)
    bad["frames"].pop()
    name = register([bad])
    with pytest.raises(ValueError, match="video_id=1: 2 frames for length 3"):
        run(VideoAPEvaluator(name, distributed=False), [clip(1, [], length=3)], [[]])


# ---------------------------------------------------------------- against a reference
def reference_iou(dt, gt):
    """Video IoU from decoded numpy masks (None = absent)."""
    inter = union = 0
    for d, g in zip(dt, gt):
        d = np.zeros((H, W), bool) if d is None else d
        g = np.zeros((H, W), bool) if g is None else g
        inter, union = inter + int((d & g).sum()), union + int((d | g).sum())
    return inter / union if union else 0.0


def reference_metrics(videos, categories):
    """AP / AP50 / AP75 / AR1 / AR10 over the "all" area range, no crowds: per category and
    threshold, greedy matching per video in score order (each prediction takes the unmatched
    object of highest IoU >= t), then precision made monotone and read at 101 recall points."""
    thresholds = np.linspace(0.5, 0.95, 10)
    ap, recall = {}, {1: {}, 10: {}, 100: {}}
    for cat in categories:
        num_gt = sum(1 for gt, _ in videos for c, _ in gt if c == cat)
        if num_gt == 0:
            continue
        for t in thresholds:
            for max_det in (1, 10, 100):
                hits = []  # (score, is true positive), videos in order, score order within
                for gt, dt in videos:
                    objs = [m for c, m in gt if c == cat]
                    dets = sorted([d for d in dt if d[1] == cat], key=lambda d: -d[0])[:max_det]
                    free = set(range(len(objs)))
                    for score, _, masks in dets:
                        best, best_iou = None, t  # ties go to the later object, as COCO's
                        for j in sorted(free):
                            iou = reference_iou(masks, objs[j])
                            if iou >= best_iou:
                                best, best_iou = j, iou
                        free.discard(best)
                        hits.append((score, best is not None))
                hits.sort(key=lambda s: -s[0])  # stable: ties keep video order
                tp = np.cumsum([h for _, h in hits])
                rc, pr = tp / num_gt, tp / np.arange(1, len(hits) + 1)
                recall[max_det][cat, t] = rc[-1] if len(hits) else 0.0
                if max_det == 100:
                    pr = np.maximum.accumulate(pr[::-1])[::-1]
                    at = [
                        pr[rc >= r][0] if (rc >= r).any() else 0.0 for r in np.linspace(0, 1, 101)
                    ]
                    ap[cat, t] = np.mean(at)

    def mean(d, ts=thresholds):
        return 100 * np.mean([v for (_, t), v in d.items() if t in ts])

    ap50, ap75 = mean(ap, thresholds[:1]), mean(ap, thresholds[5:6])
    return {
        "AP": mean(ap),
        "AP50": ap50,
        "AP75": ap75,
        "AR1": mean(recall[1]),
        "AR10": mean(recall[10]),
    }


def test_random_videos_match_reference(register):
    rng = np.random.default_rng(3)
    clips, preds, videos = [], [], []
    for v in range(6):
        n = int(rng.integers(2, 6))
        gt, dt = [], []
        for i in range(int(rng.integers(0, 4))):
            y, x = int(rng.integers(0, 4)), int(rng.integers(0, 7))
            masks = [
                rect(y, x, y + 4, x + 5) if f == 0 or rng.random() < 0.85 else None
                for f in range(n)
            ]
            gt.append((i, int(rng.integers(0, 2)), masks))
            if rng.random() < 0.8:  # a jittered copy, some frames lost, sometimes mislabelled
                shifts = rng.integers(-1, 2, n)
                lost = rng.random(n) < 0.2
                jit = [
                    None if m is None or o else np.roll(m, int(s), 1)
                    for m, s, o in zip(masks, shifts, lost)
                ]
                label = int(rng.integers(0, 2)) if rng.random() < 0.15 else gt[-1][1]
                dt.append((float(rng.random()), label, jit))
        for _ in range(int(rng.integers(0, 3))):  # false tracks
            y, x = int(rng.integers(0, 5)), int(rng.integers(0, 8))
            dt.append(
                (float(rng.random()), int(rng.integers(0, 2)), [rect(y, x, y + 3, x + 4)] * n)
            )
        clips.append(clip(v, [(i, c, m, 0) for i, c, m in gt], length=n))
        preds.append([track(s, c, m) for s, c, m in dt])
        videos.append(([(c, m) for _, c, m in gt], dt))
        for s, c, m in dt:  # the IoU itself, against the numpy one
            got = video_mask_iou([[rle(x) for x in m]], [[rle(x) for x in g] for _, _, g in gt])
            assert got.tolist() == [[reference_iou(m, g) for _, _, g in gt]]
    res = evaluate(register, clips, preds)
    ref = reference_metrics(videos, categories=(0, 1))
    assert 0 < ref["AP"] < 100
    for k, v in ref.items():
        assert res[k] == approx(v), k
