"""FastCOCOPanopticEvaluator against D2's COCOPanopticEvaluator (panopticapi), and the
evaluator dispatch."""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator

from d2ext.config import add_d2ext_config
from d2ext.data.synthetic.predictions import perturb_panoptic
from d2ext.evaluation import FastCOCOEvaluator, FastCOCOPanopticEvaluator, build_evaluator
from d2ext.evaluation.panoptic_png import read_panoptic_png


def _model_outputs(dataset, seed, with_segments_info=True):
    """(inputs, outputs) as a D2 panoptic model gives them: contiguous ids + isthing, or
    ``category * label_divisor + instance`` maps with -1 = VOID when segments_info is None."""
    meta = MetadataCatalog.get(dataset)
    with open(meta.panoptic_json) as f:
        gt = json.load(f)
    to_contiguous = {
        **meta.thing_dataset_id_to_contiguous_id,
        **meta.stuff_dataset_id_to_contiguous_id,
    }
    rng = np.random.default_rng(seed)
    pairs = []
    for ann in gt["annotations"]:
        gt_ids = read_panoptic_png(os.path.join(meta.panoptic_root, ann["file_name"]))
        pred, segments = perturb_panoptic(gt_ids, ann["segments_info"], sorted(to_contiguous), rng)
        if with_segments_info:
            info = [
                {
                    "id": s["id"],
                    "category_id": to_contiguous[s["category_id"]],
                    "isthing": s["category_id"] in meta.thing_dataset_id_to_contiguous_id,
                }
                for s in segments
            ]
            out = (torch.from_numpy(pred.astype(np.int32)), info)
        else:
            labels = np.full(pred.shape, -1, dtype=np.int32)
            for k, s in enumerate(segments):
                labels[pred == s["id"]] = to_contiguous[s["category_id"]] * meta.label_divisor + k
            out = (torch.from_numpy(labels), None)
        inp = {
            "image_id": ann["image_id"],
            "file_name": f"/data/images/{ann['file_name'][:-4]}.jpg",
        }
        pairs.append((inp, {"panoptic_seg": out}))
    return pairs


def _run(evaluator, pairs):
    evaluator.reset()
    for inp, out in pairs:
        evaluator.process([inp], [out])
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.evaluate()


@pytest.mark.parametrize("seed,with_segments_info", [(0, True), (1, False)])
def test_same_results_and_files_as_d2(panoptic_gt, tmp_path, seed, with_segments_info):
    name = panoptic_gt[0]
    # fresh outputs for each: D2's process() edits segments_info and the id maps in place
    ref = _run(
        COCOPanopticEvaluator(name, str(tmp_path / "d2")),
        _model_outputs(name, seed, with_segments_info),
    )
    ours = _run(
        FastCOCOPanopticEvaluator(name, str(tmp_path / "ours")),
        _model_outputs(name, seed, with_segments_info),
    )
    assert list(ours) == ["panoptic_seg"] and list(ours["panoptic_seg"]) == list(
        ref["panoptic_seg"]
    )
    for k, v in ref["panoptic_seg"].items():
        assert abs(ours["panoptic_seg"][k] - v) <= 1e-7, k  # percent: 1e-9 on [0, 1]
    assert 0 < ours["panoptic_seg"]["PQ"] < 100
    with (
        open(tmp_path / "d2" / "predictions.json") as f1,
        open(tmp_path / "ours" / "predictions.json") as f2,
    ):
        assert json.load(f1) == json.load(f2)


def test_bad_prediction_names_image_and_segment(panoptic_gt):
    name = panoptic_gt[0]
    ((inp, out),) = _model_outputs(name, 2)[:1]
    ids, info = out["panoptic_seg"]
    ev = FastCOCOPanopticEvaluator(name)
    ev.reset()
    with pytest.raises(
        KeyError, match=rf"image_id={inp['image_id']}.*\[{info[0]['id']}\].*not in segments_info"
    ):
        ev.process([inp], [{"panoptic_seg": (ids, info[1:])}])
    with pytest.raises(KeyError, match=rf"image_id={inp['image_id']}.*unknown category_id"):
        ev.process(
            [inp], [{"panoptic_seg": (ids, [dict(s, isthing=None, category_id=999) for s in info])}]
        )
    ev.process([inp], [out])
    with pytest.raises(KeyError, match="no prediction for the image with id"):
        ev.evaluate()


def _cfg(fast):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.D2EXT.FAST_EVAL = fast
    return cfg


def test_build_evaluator_dispatch(coco_gt, tmp_path):
    assert type(build_evaluator(_cfg(True), coco_gt, str(tmp_path))) is FastCOCOEvaluator
    assert type(build_evaluator(_cfg(False), coco_gt, str(tmp_path))).__name__ == "COCOEvaluator"


def test_build_evaluator_panoptic(tmp_path):
    from d2ext.data import synthetic

    synthetic.ensure_synthetic_generated("synth_panoptic_val")
    # standard registration: no semantic gt, so no SemSegEvaluator
    evs = build_evaluator(_cfg(True), "synth_panoptic_val", str(tmp_path))
    assert [type(e) for e in evs._evaluators] == [FastCOCOEvaluator, FastCOCOPanopticEvaluator]
    evs = build_evaluator(_cfg(False), "synth_panoptic_val_separated", str(tmp_path))
    assert [type(e).__name__ for e in evs._evaluators] == [
        "SemSegEvaluator",
        "COCOEvaluator",
        "COCOPanopticEvaluator",
    ]


def test_build_evaluator_table(tmp_path, monkeypatch):
    from detectron2.data import DatasetCatalog
    from detectron2.evaluation import DatasetEvaluator, SemSegEvaluator

    from d2ext.evaluation.build import EVALUATOR_BUILDERS

    def register(name, evaluator_type):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(
            evaluator_type=evaluator_type, stuff_classes=["a", "b"], ignore_label=255
        )
        return name

    assert list(EVALUATOR_BUILDERS) == [
        "coco",
        "coco_panoptic_seg",
        "sem_seg",
        "landmark",
        "widerface",
        "densepose",
        "youtube_vis",
        "cityscapes_vps",
    ]
    name = register("d2ext_test_eval_sem_seg", "sem_seg")
    for fast in (True, False):  # D2's evaluator either way: there is no drop-in
        assert type(build_evaluator(_cfg(fast), name, str(tmp_path))) is SemSegEvaluator

    name = register("d2ext_test_eval_video", "video_ap")
    with pytest.raises(
        NotImplementedError,
        match=r"no evaluator for dataset 'd2ext_test_eval_video' with evaluator_type='video_ap'; "
        r"set MetadataCatalog.get\(name\).evaluator_type to one of coco, coco_panoptic_seg, "
        r"sem_seg, landmark, widerface, densepose, youtube_vis, cityscapes_vps$",
    ):
        build_evaluator(_cfg(True), name, str(tmp_path))

    class VideoAP(DatasetEvaluator):
        def __init__(self, dataset_name, output_dir):
            self.args = (dataset_name, output_dir)

    # a new evaluator type is one entry
    monkeypatch.setitem(EVALUATOR_BUILDERS, "video_ap", lambda cfg, d, out: [VideoAP(d, out)])
    ev = build_evaluator(_cfg(True), name, str(tmp_path))
    assert type(ev) is VideoAP and ev.args == (name, str(tmp_path))
    cfg = _cfg(True)
    assert build_evaluator(cfg, name).args == (name, os.path.join(cfg.OUTPUT_DIR, "inference"))
