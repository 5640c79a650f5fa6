"""DensePose chart metrics (``d2ext.evaluation.densepose_evaluation``) on hand-made (labels, uv)
results: GPS_uv of a pair, the official AP structure (matching by GPS, ignored people without
points), part mIoU and UV error; the evaluator build entry."""

import json
import math

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

from d2ext import add_d2ext_config
from d2ext.evaluation import build_evaluator
from d2ext.evaluation.densepose_evaluation import DensePoseEvaluator, gps_uv, quantize_iuv

KAPPA = 0.255
COLS = [2, 10, 20, 30, 40]
PARTS = [1, 2, 3, 23, 24]
U_LOC = [10, 60, 100, 150, 200]  # GT U = U_LOC / 255: exactly representable after quantisation
V_LOC = [5, 50, 120, 180, 250]


def _person(ann_id, image_id, x, y, with_points=True, size=51):
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": float(size * size),
           "bbox": [float(x), float(y), float(size), float(size)]}  # fmt: skip
    if with_points:
        # a box of 51: px = int(dp_x * 51 / 255) = int(dp_x / 5), so dp_x = 5 c + 2.5 reads column c
        ann.update(
            dp_x=[5 * c + 2.5 for c in COLS] + [100.0], dp_y=[5 * c + 2.5 for c in COLS] + [100.0],
            dp_I=PARTS + [0], dp_U=[k / 255 for k in U_LOC] + [0.0], dp_V=[k / 255 for k in V_LOC] + [0.0],
        )  # fmt: skip
    return ann


def _chart(parts=PARTS, du=0, size=51):
    """(labels, uv) over a 51 x 51 box holding ``parts`` at the GT points, U shifted by du/255."""
    labels = torch.zeros(size, size, dtype=torch.int64)
    uv = torch.zeros(2, size, size)
    for c, p, u, v in zip(COLS, parts, U_LOC, V_LOC):
        labels[c, c] = p
        uv[0, c, c] = (u + du + 0.5) / 255  # + 0.5: the truncation reads exactly u + du
        uv[1, c, c] = (v + 0.5) / 255
    return labels, uv


def test_quantize_truncates():
    iuv = quantize_iuv(torch.tensor([[3, 0]]), torch.tensor([[[0.999, 1.2]], [[0.0, -0.1]]]))
    assert iuv.dtype == np.uint8 and iuv[:, 0, :].tolist() == [[3, 0], [254, 255], [0, 0]]


def test_gps_uv_of_a_pair():
    gt = _person(1, 1, 10, 10)
    box = gt["bbox"]
    assert gps_uv(gt, box, quantize_iuv(*_chart()), KAPPA) == 1.0
    expected = math.exp(-(0.2**2) / (2 * KAPPA**2))  # U off by 51 / 255 = 0.2 on every point
    assert gps_uv(gt, box, quantize_iuv(*_chart(du=51)), KAPPA) == pytest.approx(
        expected, abs=1e-12
    )
    wrong = quantize_iuv(*_chart(parts=[1, 2, 3, 23, 23]))  # last point: wrong part -> 0
    assert gps_uv(gt, box, wrong, KAPPA) == pytest.approx(0.8)
    # a detection shifted by 15 px: points now read other pixels or fall outside the box
    assert gps_uv(gt, [25.0, 10.0, 51.0, 51.0], quantize_iuv(*_chart()), KAPPA) == 0.0


@pytest.fixture
def dataset(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 200, "width": 200},
                   {"id": 2, "file_name": "b.png", "height": 200, "width": 200}],
        "annotations": [_person(1, 1, 10, 10), _person(2, 1, 100, 10),
                        _person(3, 1, 10, 100, with_points=False, size=60),
                        _person(4, 2, 10, 10, with_points=False)],
        "categories": [{"id": 1, "name": "person"}],
    }  # fmt: skip
    path = tmp_path / "dp.json"
    path.write_text(json.dumps(data))
    name = "d2ext_test_densepose_eval"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, list)
    MetadataCatalog.get(name).set(
        json_file=str(path), evaluator_type="densepose", thing_classes=["person"],
        thing_dataset_id_to_contiguous_id={1: 0},
    )  # fmt: skip
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _xyxy(*boxes):
    return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32)


def test_ap_structure_and_point_metrics(dataset, tmp_path):
    ev = DensePoseEvaluator(dataset, output_dir=str(tmp_path / "out"), distributed=False)
    ev.reset()
    empty = (torch.zeros(60, 60, dtype=torch.int64), torch.zeros(2, 60, 60))
    # image 1: perfect on person 1, UV off by 0.2 and one wrong part on person 2, a top-scoring
    # detection on the person without points (box IoU 1: ignored), a low-scoring false positive
    ev.add_predictions(
        1,
        _xyxy([10, 10, 51, 51], [100, 10, 51, 51], [10, 100, 60, 60], [150, 150, 20, 20]),
        torch.tensor([0.95, 0.8, 0.99, 0.1]),
        torch.zeros(4, dtype=torch.int64),
        [_chart(), _chart(parts=[1, 2, 3, 23, 23], du=51), empty, empty],
    )
    # image 2: only a person without points: its detections are all ignored
    ev.add_predictions(
        2,
        _xyxy([120, 120, 60, 60]),
        torch.tensor([0.9]),
        torch.zeros(1, dtype=torch.int64),
        [empty],
    )
    res = ev.evaluate()["densepose"]
    gps_2 = 0.8 * math.exp(-(0.2**2) / (2 * KAPPA**2))  # 0.588: matched at thresholds 0.5, 0.55
    assert 0.55 < gps_2 < 0.6
    ap_high = 51 / 101  # person 1 only: precision 1 up to recall 0.5
    assert res["GPS_uv_AP"] == pytest.approx(100 * (2 + 8 * ap_high) / 10)
    assert res["GPS_uv_AP50"] == pytest.approx(100.0)
    assert res["GPS_uv_AP75"] == pytest.approx(100 * ap_high)
    assert res["GPS_uv_APm"] == pytest.approx(res["GPS_uv_AP"]) and math.isnan(res["GPS_uv_APl"])
    assert res["GPS_uv_AR"] == pytest.approx(100 * (2 + 8 * 0.5) / 10)
    # parts 1, 2, 3: IoU 1; 23: 2 GT / 3 predicted points; 24: 2 GT / 1 predicted
    assert res["part_mIoU"] == pytest.approx(100 * (3 + 2 / 3 + 1 / 2) / 5)
    assert res["part_accuracy"] == pytest.approx(90.0)
    assert res["U_MAE"] == pytest.approx(4 * 0.2 / 9) and res["V_MAE"] == pytest.approx(0.0)
    assert res["UV_MAE"] == pytest.approx(2 * 0.2 / 9)
    written = json.loads((tmp_path / "out" / "densepose_results.json").read_text())
    assert written["kappa"] == KAPPA and written["part_accuracy"] == pytest.approx(90.0)

    ev.reset()  # nothing detected: AP 0, every point read as background
    res = ev.evaluate()["densepose"]
    assert res["GPS_uv_AP"] == 0.0 and res["part_mIoU"] == 0.0 and math.isnan(res["U_MAE"])


def test_only_the_best_twenty_detections_count(dataset):
    ev = DensePoseEvaluator(dataset, distributed=False)
    n = 25
    charts = [(torch.zeros(5, 5, dtype=torch.int64), torch.zeros(2, 5, 5))] * n
    ev.add_predictions(
        1,
        _xyxy(*[[150, 150, 5, 5]] * n),
        torch.linspace(0, 1, n),
        torch.zeros(n, dtype=torch.int64),
        charts,
    )
    assert len(ev._predictions) == 20 and ev._predictions[0]["score"] == 1.0


def test_build_entry_gives_coco_and_densepose(dataset, tmp_path):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.D2EXT.FAST_EVAL = False
    evaluators = build_evaluator(cfg, dataset, str(tmp_path))
    assert isinstance(evaluators, DatasetEvaluators)
    assert [type(e) for e in evaluators._evaluators] == [COCOEvaluator, DensePoseEvaluator]


def test_missing_json_is_a_clear_error():
    name = "d2ext_test_densepose_nojson"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, list)
    with pytest.raises(ValueError, match="has no json_file"):
        DensePoseEvaluator(name)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_oracle_charts_of_the_synthetic_figures_score_near_the_top(tmp_path):
    """Charts rendered from the figures' exact labels at pixel centres of each GT box (truncated
    as the converter does) pin the point conventions end to end; what they miss is the
    discretisation and the official ``/ 255`` point mapping."""
    from pycocotools.coco import COCO

    from d2ext.data.synthetic.densepose_figures import render_densepose_scene, scene_labels
    from d2ext.evaluation.densepose_evaluation import evaluate_densepose

    images, anns, preds = [], [], []
    yy, xx = np.mgrid[:192, :192] + 0.5
    for i in range(12):
        _, scene_anns, figures = render_densepose_scene(7, i, 192, 192)
        who, part, u, v = scene_labels(figures, xx, yy)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 192, "width": 192})
        for a in scene_anns:
            anns.append({**a, "id": len(anns) + 1, "image_id": i + 1})
            x, y, w, h = (int(c) for c in a["bbox"])
            sl = (slice(y, y + h), slice(x, x + w))
            labels = np.where(who[sl] == a["figure"] + 1, part[sl], 0)
            uv = np.stack([u[sl], v[sl]]) * (labels > 0)
            iuv = quantize_iuv(torch.from_numpy(labels), torch.from_numpy(uv).float())
            preds.append(
                {"image_id": i + 1, "category_id": 1, "bbox": a["bbox"], "score": 0.9, "iuv": iuv}
            )
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1}]}))
    res = evaluate_densepose(COCO(str(path)), preds)
    assert res["GPS_uv_AP50"] == 100.0 and res["GPS_uv_AP"] > 85
    assert res["part_accuracy"] > 93 and res["UV_MAE"] < 0.03
