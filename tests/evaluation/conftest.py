"""Tiny ground truths for the evaluator tests: a COCO instances json and a COCO panoptic set
(PNGs + json), written once per session and registered in D2's MetadataCatalog; switches
between the compiled evaluation ops and their fallbacks."""

import contextlib
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import MetadataCatalog
from PIL import Image

import d2ext  # noqa: F401  (registration)
import d2ext.layers.eval_ops as eval_ops
from d2ext.layers import extension_available


@contextlib.contextmanager
def eval_ops_disabled():
    """Inside, d2ext's evaluation code takes the routes it takes without ``d2ext._C``: the ops'
    numpy references, OpenCV PNG decoding, lookup-table pair counting (all of them follow
    :func:`d2ext.layers.eval_ops_compiled`, which this switches off)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(eval_ops, "extension_available", lambda: False)
        yield


@pytest.fixture
def without_eval_ops():
    """:func:`eval_ops_disabled`, for tests that compare both routes on the same input."""
    return eval_ops_disabled


@pytest.fixture(params=["compiled", "fallback"])
def eval_ops_route(request):
    """Runs a test with the compiled evaluation ops (skipped when not built), then without."""
    if request.param == "compiled":
        if not extension_available():
            pytest.skip("d2ext._C not built")
        yield request.param
    else:
        with eval_ops_disabled():
            yield request.param


THING_IDS = (2, 5, 9)  # non-contiguous on purpose
STUFF_IDS = (10, 12)


def _blob(rng, h, w):
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(2, h / 3), rng.uniform(2, w / 3)
    yy, xx = np.ogrid[:h, :w]
    if rng.random() < 0.5:
        return (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def _rle(mask, compressed=True):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        rle["counts"] = rle["counts"].decode("utf-8")
        return rle
    # uncompressed RLE (as COCO stores crowds): run lengths in column-major order
    flat = mask.T.ravel().astype(np.int8)
    change = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
    return {"size": list(mask.shape), "counts": np.diff(np.r_[0, change]).tolist()}


def make_coco_instances(path, num_images=10, h=48, w=61, seed=0):
    """COCO json with polygon, RLE and crowd (uncompressed RLE) objects; width not a multiple
    of 8 on purpose."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        images.append({"id": 100 + i, "file_name": f"{i}.jpg", "height": h, "width": w})
        for j in range(int(rng.integers(0 if i == 3 else 1, 8))):
            crowd = rng.random() < 0.08
            if not crowd and rng.random() < 0.4:  # a polygon rectangle
                x0, y0 = rng.uniform(0, w - 4), rng.uniform(0, h - 4)
                x1, y1 = rng.uniform(x0 + 2, w), rng.uniform(y0 + 2, h)
                seg = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                mask = mask_util.decode(mask_util.frPyObjects(seg, h, w)).max(axis=2).astype(bool)
            else:
                mask = _blob(rng, h, w)
                seg = _rle(mask, compressed=not crowd)
            if mask.sum() == 0:
                continue
            ys, xs = np.nonzero(mask)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": 100 + i,
                    "category_id": int(rng.choice(THING_IDS)),
                    "segmentation": seg,
                    "area": float(mask.sum()),
                    "iscrowd": int(crowd),
                    "bbox": [
                        float(xs.min()),
                        float(ys.min()),
                        float(xs.max() - xs.min() + 1),
                        float(ys.max() - ys.min() + 1),
                    ],
                }
            )
    cats = [{"id": c, "name": f"thing{c}"} for c in THING_IDS]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)


def make_panoptic(root, num_images=8, h=40, w=53, seed=0):
    """COCO panoptic PNGs + json: two stuff regions, things (some crowd) on top, a VOID band,
    random 24-bit ids. Returns (json path, png folder)."""
    from panopticapi.utils import id2rgb

    rng = np.random.default_rng(seed)
    png_dir = os.path.join(root, "panoptic")
    os.makedirs(png_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        ids = np.zeros((h, w), dtype=np.int64)
        cats = {}
        used = set()

        def new_id():
            while True:
                sid = int(rng.integers(1, 1 << 24))
                if sid not in used:
                    used.add(sid)
                    return sid

        split = int(rng.integers(h // 4, 3 * h // 4))
        for region, cat in ((slice(0, split), STUFF_IDS[0]), (slice(split, h), STUFF_IDS[1])):
            sid = new_id()
            ids[region] = sid
            cats[sid] = (cat, 0)
        crowd_cat = int(rng.choice(THING_IDS))
        for j in range(int(rng.integers(1, 9))):
            sid = new_id()
            crowd = j < 2 and rng.random() < 0.5
            ids[_blob(rng, h, w)] = sid
            cats[sid] = (crowd_cat if crowd else int(rng.choice(THING_IDS)), int(crowd))
        y0 = int(rng.integers(0, h))
        ids[y0 : y0 + int(rng.integers(0, 5)), :] = 0  # VOID band
        segments = []
        for sid, (cat, crowd) in cats.items():
            ys, xs = np.nonzero(ids == sid)
            if ys.size:
                segments.append(
                    {
                        "id": sid,
                        "category_id": cat,
                        "iscrowd": crowd,
                        "area": int(ys.size),
                        "bbox": [
                            int(xs.min()),
                            int(ys.min()),
                            int(xs.max() - xs.min() + 1),
                            int(ys.max() - ys.min() + 1),
                        ],
                    }
                )
        name = f"{i:04d}"
        Image.fromarray(id2rgb(ids)).save(os.path.join(png_dir, name + ".png"))
        images.append({"id": 7 + i, "file_name": name + ".jpg", "height": h, "width": w})
        annotations.append(
            {"image_id": 7 + i, "file_name": name + ".png", "segments_info": segments}
        )
    categories = [{"id": c, "name": f"thing{c}", "isthing": 1} for c in THING_IDS]
    categories += [{"id": c, "name": f"stuff{c}", "isthing": 0} for c in STUFF_IDS]
    json_path = os.path.join(root, "panoptic.json")
    with open(json_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_path, png_dir


@pytest.fixture(scope="session")
def coco_gt(tmp_path_factory):
    """Name of a registered COCO instances dataset (metadata only: json_file, classes)."""
    name = "d2ext_test_eval_coco"
    path = str(tmp_path_factory.mktemp("coco_gt") / "instances.json")
    make_coco_instances(path)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(
        json_file=path,
        evaluator_type="coco",
        thing_classes=[f"thing{c}" for c in THING_IDS],
        thing_dataset_id_to_contiguous_id={c: i for i, c in enumerate(THING_IDS)},
    )
    return name


@pytest.fixture(scope="session")
def panoptic_gt(tmp_path_factory):
    """(dataset name, json path, png folder) of a registered tiny COCO panoptic dataset."""
    name = "d2ext_test_eval_panoptic"
    root = str(tmp_path_factory.mktemp("panoptic_gt"))
    json_path, png_dir = make_panoptic(root)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    n_th = len(THING_IDS)
    MetadataCatalog.get(name).set(
        panoptic_json=json_path,
        panoptic_root=png_dir,
        evaluator_type="coco_panoptic_seg",
        label_divisor=1000,
        thing_dataset_id_to_contiguous_id={c: i for i, c in enumerate(THING_IDS)},
        stuff_dataset_id_to_contiguous_id={c: n_th + i for i, c in enumerate(STUFF_IDS)},
    )
    return name, json_path, png_dir
