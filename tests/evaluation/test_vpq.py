"""VPQ (d2ext.evaluation.vpq, VPQEvaluator): parity with the official eval_vpq.py on the shared
fixture, hand-built videos with known values (perfect, ID switch, missed frame, crowd / void),
the evaluator against vpq_compute, and the official script's traps as clear errors."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import id2rgb
from PIL import Image

from d2ext.config import add_d2ext_config
from d2ext.data import register_datasets
from d2ext.evaluation import VPQEvaluator, build_evaluator, vpq_compute
from d2ext.evaluation.panoptic_png import read_panoptic_png
from d2ext.evaluation.vpq import VideoFrame, VPQStat

H, W = 8, 12
ROAD, BUILDING, CAR, PERSON = 0, 1, 2, 3
CATEGORIES = [
    {"id": ROAD, "name": "road", "isthing": 0},
    {"id": BUILDING, "name": "building", "isthing": 0},
    {"id": CAR, "name": "car", "isthing": 1},
    {"id": PERSON, "name": "person", "isthing": 1},
]
CATS = {c["id"]: c for c in CATEGORIES}
ROAD_ID, BUILDING_ID = 8405120, 4605510  # stuff ids are class colours, as in Cityscapes-VPS
GROUPS = ("All", "Things", "Stuff")


def _scene(t, car_id=5, crowd=False):
    """(ids, {id: (category, iscrowd)}) of frame t: building above road, a car moving right,
    a VOID bottom row; with ``crowd`` a crowd of people on the right."""
    ids = np.full((H, W), ROAD_ID, np.int64)
    ids[:3] = BUILDING_ID
    segs = {ROAD_ID: (ROAD, 0), BUILDING_ID: (BUILDING, 0)}
    if car_id is not None:
        ids[3:6, 1 + t : 4 + t] = car_id
        segs[car_id] = (CAR, 0)
    if crowd:
        ids[3:7, 10:] = 300
        segs[300] = (PERSON, 1)
    ids[7] = 0
    return ids, segs


def _segments(ids, segs):
    return [
        {"id": i, "category_id": c, "iscrowd": k, "area": int((ids == i).sum())}
        for i, (c, k) in segs.items()
    ]


def _video(gt, pred):
    return [
        VideoFrame(f"v_{t}", g[0], _segments(*g), p[0], _segments(*p))
        for t, (g, p) in enumerate(zip(gt, pred))
    ]


def _vpq(gt, pred):
    stat = VPQStat(CATS).add_video(_video(gt, pred), "v")
    return stat.results(), stat


def test_perfect_prediction_is_100():
    gt = [_scene(t) for t in range(6)]
    pred = [_scene(t, car_id=77) for t in range(6)]  # other ids, same segments
    res, stat = _vpq(gt, pred)
    for k in (0, 5, 10, 15, "final"):
        assert res[k] == {g: 100.0 for g in GROUPS}
    assert stat.id_switches == 0 and stat.num_videos == 1


def test_id_switch_lowers_vpq_at_k_above_0_only():
    gt = [_scene(t) for t in range(6)]
    pred = [_scene(t, car_id=7 if t < 3 else 8) for t in range(6)]
    res, stat = _vpq(gt, pred)
    assert stat.id_switches == 1
    assert res[0]["Things"] == 100.0
    # per window of the car tube: TP with IoU 1, or the two half tubes (IoU 1/2 is no match),
    # or one tube matching at IoU (n - 1) / n and the other an FP
    assert res[5]["Things"] == pytest.approx(100 * 4 / (4 + 1.5))
    assert res[10]["Things"] == pytest.approx(100 * (10 / 3) / (4 + 1))
    assert res[15]["Things"] == pytest.approx(100 * 1.5 / (2 + 2 + 0.5))
    assert all(res[k]["Stuff"] == 100.0 for k in (0, 5, 10, 15))
    assert res["final"]["All"] == pytest.approx(np.mean([res[k]["All"] for k in (0, 5, 10, 15)]))


def test_missed_frame():
    gt = [_scene(t) for t in range(6)]
    pred = [_scene(t, car_id=7) for t in range(6)]
    ids, segs = pred[2]
    ids = ids.copy()
    ids[ids == 7] = 0  # the car left unlabelled in frame 2
    pred[2] = (ids, {k: v for k, v in segs.items() if k != 7})
    res, stat = _vpq(gt, pred)
    assert res[0]["Things"] == pytest.approx(100 * 5 / 5.5)  # 5 TP, 1 FN
    assert res[5]["Things"] == pytest.approx(100 * 3 / 5)  # 3 TP, 2 FN, 2 FP
    assert stat.stats[5].per_category()[CAR] == {"iou": 3.0, "tp": 3, "fp": 2, "fn": 2}
    assert stat.id_switches == 0  # the gap does not reset the car's track


def test_crowd_and_void():
    gt = [_scene(t, crowd=True) for t in range(6)]
    pred = []
    for t in range(6):
        ids, segs = _scene(t, car_id=9, crowd=True)
        ids, segs = ids.copy(), dict(segs)
        ids[ids == 300] = 41  # the crowd predicted as one ordinary person
        segs[41] = (PERSON, 0)
        del segs[300]
        ids[7, :6] = ROAD_ID  # VOID predicted as road: left out of the union
        ids[7, 6:] = 42  # a person on VOID only: not a FP
        segs[42] = (PERSON, 0)
        pred.append((ids, segs))
    res, stat = _vpq(gt, pred)
    for k in (0, 5, 10, 15):
        assert res[k] == {g: 100.0 for g in GROUPS}
        person = stat.stats[k].per_category()[PERSON]
        assert person == {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0}  # crowd: no FN, no FP
    # the same prediction with the crowd not marked iscrowd: an ordinary person, matched
    gt_plain = [(ids, {**segs, 300: (PERSON, 0)}) for ids, segs in gt]
    _, stat = _vpq(gt_plain, pred)
    assert stat.stats[0].per_category()[PERSON]["tp"] == 6


# ---- files in the Cityscapes-VPS layout ----------------------------------------------------


def _image_id(v, t, frames):
    return f"{v + 1:04d}_{v * frames + t + 1:04d}_city_000000_{5 * t:06d}"


def _write_dataset(root, gt_videos, pred_videos):
    """The official layout: (submit_dir, truth_dir, gt json) for lists of videos of
    (ids, segs) frames."""
    truth, pan_pred = os.path.join(root, "val", "panoptic_video"), os.path.join(root, "pan_pred")
    os.makedirs(truth, exist_ok=True)
    os.makedirs(pan_pred, exist_ok=True)
    images, annotations, preds = [], [], []
    for v, (gt, pred) in enumerate(zip(gt_videos, pred_videos)):
        for t, ((g_ids, g_segs), (p_ids, p_segs)) in enumerate(zip(gt, pred)):
            image_id = _image_id(v, t, len(gt))
            png = f"{image_id}_final_mask.png"
            Image.fromarray(id2rgb(g_ids)).save(os.path.join(truth, png))
            Image.fromarray(id2rgb(p_ids)).save(os.path.join(pan_pred, f"{image_id}.png"))
            images.append(
                {"id": image_id, "width": W, "height": H, "file_name": f"{image_id}_newImg8bit.png"}
            )
            annotations.append(
                {"image_id": image_id, "file_name": png, "segments_info": _segments(g_ids, g_segs)}
            )
            preds.append(
                {
                    "image_id": image_id,
                    "file_name": f"{image_id}.png",
                    "segments_info": _segments(p_ids, p_segs),
                }
            )
    gt_json = os.path.join(root, "panoptic_gt_val_city_vps.json")
    with open(gt_json, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)
    with open(os.path.join(root, "pred.json"), "w") as f:
        json.dump({"annotations": preds}, f)
    return root, truth, gt_json


@pytest.fixture
def tiny(tmp_path):
    """Two 6-frame videos, the second with an ID switch; returns (submit, truth, json)."""
    gt = [[_scene(t) for t in range(6)], [_scene(t, car_id=6) for t in range(6)]]
    pred = [
        [_scene(t, car_id=70) for t in range(6)],
        [_scene(t, car_id=71 if t < 4 else 72) for t in range(6)],
    ]
    return _write_dataset(str(tmp_path), gt, pred)


def _edit_json(path, fn):
    with open(path) as f:
        data = json.load(f)
    fn(data)
    with open(path, "w") as f:
        json.dump(data, f)


def test_files_round_trip(tiny):
    submit, truth, gt_json = tiny
    res, stat = vpq_compute(submit, truth, gt_json, output_dir=submit, return_stats=True)
    assert stat.id_switches == 1 and stat.num_videos == 2
    assert res[0]["All"] == 100.0 and res[5]["Things"] < 100.0
    with open(os.path.join(submit, "vpq-final.txt")) as f:
        assert f.read().startswith(f"vpq_all:{res['final']['All']:.4f}\n")
    assert all(os.path.isfile(os.path.join(submit, f"vpq-{k}.txt")) for k in (0, 5, 10, 15))


def test_missing_prediction_png(tiny):
    submit, truth, gt_json = tiny
    os.remove(os.path.join(submit, "pan_pred", _image_id(1, 3, 6) + ".png"))
    with pytest.raises(FileNotFoundError, match=_image_id(1, 3, 6)):
        vpq_compute(submit, truth, gt_json)


def test_png_id_not_in_json(tiny):
    submit, truth, gt_json = tiny
    _edit_json(
        os.path.join(submit, "pred.json"),
        lambda d: d["annotations"][4]["segments_info"].pop(),  # the car of frame 4
    )
    with pytest.raises(KeyError, match=f"{_image_id(0, 4, 6)}.*not in segments_info"):
        vpq_compute(submit, truth, gt_json)


def test_unequal_video_lengths(tiny):
    submit, truth, gt_json = tiny

    def drop_last_frame(d):
        del d["images"][-1], d["annotations"][-1]

    _edit_json(gt_json, drop_last_frame)
    _edit_json(os.path.join(submit, "pred.json"), lambda d: d["annotations"].pop())
    with pytest.raises(ValueError, match="video '0002' has 5 annotated frames.*exactly 6"):
        vpq_compute(submit, truth, gt_json)
    _, stat = vpq_compute(submit, truth, gt_json, frames_per_video=None, return_stats=True)
    assert stat.id_switches == 1  # any length


def test_mismatched_image_order(tiny):
    submit, truth, gt_json = tiny
    expected = vpq_compute(submit, truth, gt_json)

    def swap(d):
        a = d["annotations"]
        a[1], a[2] = a[2], a[1]

    pred_json = os.path.join(submit, "pred.json")
    _edit_json(pred_json, swap)
    with pytest.raises(ValueError, match=r"annotations\[1\] is for image .*by position"):
        vpq_compute(submit, truth, gt_json)
    assert vpq_compute(submit, truth, gt_json, check_official_order=False) == expected

    def swap_images(d):
        swap(d)
        d["images"][1], d["images"][2] = d["images"][2], d["images"][1]

    # images listed out of frame order: the official reads the gt PNGs sorted, so it would
    # score frame 2's annotation against frame 1's PNG
    _edit_json(gt_json, swap_images)
    with pytest.raises(ValueError, match="sorted name order"):
        vpq_compute(submit, truth, gt_json)


def test_other_bad_inputs(tiny):
    submit, truth, gt_json = tiny
    bad = os.path.join(submit, "pan_pred", _image_id(0, 1, 6) + ".png")
    Image.fromarray(id2rgb(np.zeros((H, W + 1), np.int64))).save(bad)
    with pytest.raises(ValueError, match=f"{_image_id(0, 1, 6)}.*one size"):
        vpq_compute(submit, truth, gt_json)
    _edit_json(os.path.join(submit, "pred.json"), lambda d: d["annotations"].pop())
    with pytest.raises(ValueError, match="11 annotations for the 12 images"):
        vpq_compute(submit, truth, gt_json)


# ---- the evaluator -------------------------------------------------------------------------


def _register(name, gt_json):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    image_root = os.path.join(os.path.dirname(gt_json), "val", "img")
    os.makedirs(image_root, exist_ok=True)
    register_datasets([(name, "cityscapes_vps", gt_json, image_root)])
    return name


def _outputs(dicts, submit, name, renumber_stuff=False):
    """Model outputs from the submission's files: contiguous categories, stuff ids numbered
    per frame (as D2's panoptic heads do) when ``renumber_stuff``."""
    meta = MetadataCatalog.get(name)
    with open(os.path.join(submit, "pred.json")) as f:
        preds = {a["image_id"]: a for a in json.load(f)["annotations"]}
    outs = []
    for d in dicts:
        ids = read_panoptic_png(os.path.join(submit, "pan_pred", f"{d['image_id']}.png"))
        ids, segments = ids.astype(np.int64), []
        for j, s in enumerate(preds[d["image_id"]]["segments_info"]):
            isthing = s["category_id"] in meta.thing_dataset_id_to_contiguous_id
            maps = (
                meta.thing_dataset_id_to_contiguous_id
                if isthing
                else meta.stuff_dataset_id_to_contiguous_id
            )
            sid = s["id"]
            if renumber_stuff and not isthing:
                sid = 1000 + j
                ids[ids == s["id"]] = sid
            segments.append({"id": sid, "category_id": maps[s["category_id"]], "isthing": isthing})
        outs.append({"panoptic_seg": (torch.from_numpy(ids).int(), segments)})
    return outs


def _run(evaluator, dicts, outputs, batch=2):
    evaluator.reset()
    for i in range(0, len(dicts), batch):
        evaluator.process(dicts[i : i + batch], outputs[i : i + batch])
    return evaluator.evaluate()["vpq"]


def _check_evaluator(res, expected, id_switches):
    for k in (0, 5, 10, 15):
        for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            assert res[f"VPQ{suffix}@{k}"] == pytest.approx(expected[k][group], abs=1e-9)
    for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        assert res[f"VPQ{suffix}"] == pytest.approx(expected["final"][group], abs=1e-9)
    assert res["ID_switches"] == id_switches


def test_evaluator_matches_vpq_compute(tiny, tmp_path):
    submit, truth, gt_json = tiny
    expected, stat = vpq_compute(submit, truth, gt_json, return_stats=True)
    name = _register("d2ext_test_vpq_tiny", gt_json)
    dicts = DatasetCatalog.get(name)
    cfg = get_cfg()
    add_d2ext_config(cfg)
    evaluator = build_evaluator(cfg, name, output_folder=str(tmp_path / "out"))
    assert isinstance(evaluator, VPQEvaluator)
    _check_evaluator(
        _run(evaluator, dicts, _outputs(dicts, submit, name, True)), expected, stat.id_switches
    )
    assert os.path.isfile(tmp_path / "out" / "vpq-final.txt")

    # frames of a video missing, or out of the json's frame order: clear errors
    with pytest.raises(ValueError, match="video '0002': no prediction for its annotated frames"):
        _run(evaluator, dicts[:-1], _outputs(dicts[:-1], submit, name))
    swapped = [dict(d) for d in dicts]
    swapped[1]["frame_idx"], swapped[2]["frame_idx"] = 2, 1
    with pytest.raises(ValueError, match="do not follow the gt json's frame order"):
        _run(evaluator, swapped, _outputs(dicts, submit, name))
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


# ---- the shared parity fixture (the official eval_vpq.py's numbers) ------------------------


@pytest.fixture
def official(tmp_path, require_shared):
    """A writable copy of ../shared/fixtures/vpq and its expected numbers."""
    src = require_shared("fixtures", "vpq")
    dst = str(tmp_path / "vpq")
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for folder, dirs, _ in os.walk(dst):
        os.chmod(folder, 0o755)
    with open(os.path.join(dst, "expected_vpq.json")) as f:
        expected = json.load(f)
    return dst, expected


def _official_args(root):
    return dict(
        submit_dir=os.path.join(root, "val_pans_unified"),
        truth_dir=os.path.join(root, "cityscapes_vps", "val", "panoptic_video"),
        pan_gt_json_file=os.path.join(root, "cityscapes_vps", "panoptic_gt_val_city_vps.json"),
    )


def test_official_fixture(official, eval_ops_route):
    root, expected = official
    args = _official_args(root)
    res, stat = vpq_compute(**args, output_dir=args["submit_dir"], return_stats=True)
    for k in expected["window_sizes_k"]:
        for group in GROUPS:
            assert abs(res[k][group] - expected["vpq"][str(k)][group]) <= 1e-9, (k, group)
        details = expected["details"][str(k)]
        pq = stat.pq_results()[k]
        for group in GROUPS:
            assert pq[group]["n"] == details[group]["n"], (k, group)
        ours = stat.stats[k].per_category()
        for c, ref in details["per_class"].items():
            got = ours[int(c)]
            assert (got["tp"], got["fp"], got["fn"]) == (ref["tp"], ref["fp"], ref["fn"]), (k, c)
            assert abs(got["iou"] - ref["iou"]) <= 1e-9, (k, c)
    for group in GROUPS:
        assert abs(res["final"][group] - expected["final"][group]) <= 1e-9, group
    with open(os.path.join(args["submit_dir"], "vpq-final.txt")) as f:
        assert f.read() == expected["vpq_final_txt"]
    assert stat.id_switches == 1  # the largest car of video 0001 from frame index 3 on


def test_official_fixture_through_the_evaluator(official):
    root, expected = official
    args = _official_args(root)
    name = _register("d2ext_test_vpq_fixture", args["pan_gt_json_file"])
    dicts = DatasetCatalog.get(name)
    want = {int(k): v for k, v in expected["vpq"].items()}
    want.update(final=expected["final"])
    for renumber in (False, True):
        outputs = _outputs(dicts, args["submit_dir"], name, renumber_stuff=renumber)
        _check_evaluator(_run(VPQEvaluator(name, distributed=False), dicts, outputs), want, 1)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_videos_of_any_length():
    """Without the official 6-frame chunks: a one-frame video adds only k = 0 windows; k with no
    window at all is NaN (the official divides by zero)."""
    stat = VPQStat(CATS)
    stat.add_video(_video([_scene(0)], [_scene(0, car_id=3)]), "short")
    res = stat.results()
    assert res[0]["All"] == 100.0 and np.isnan(res[5]["All"]) and np.isnan(res["final"]["All"])
    stat.add_video(_video([_scene(t) for t in range(3)], [_scene(t) for t in range(3)]), "long")
    res = stat.results()
    assert res[5]["All"] == 100.0 and np.isnan(res[15]["All"])
    assert stat.stats[0].per_category()[CAR]["tp"] == 4
