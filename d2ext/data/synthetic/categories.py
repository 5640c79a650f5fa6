"""Categories of the synthetic datasets and the D2 metadata built from them.

Dataset category ids are deliberately *not* contiguous from 1 (thing ids have gaps, stuff ids
start at 100), so any code that confuses dataset ids with contiguous ids fails loudly on them.
The metadata dicts follow D2's builtin COCO registration (``builtin_meta.py``) field by field,
so D2's ``COCOEvaluator``, ``COCOPanopticEvaluator``, ``SemSegEvaluator`` and ``Visualizer``
work unchanged.
"""

from typing import Dict, List

from d2ext.data.datasets import coco_instances_metadata, coco_panoptic_metadata

# Things: one per shape drawn by ``render.py`` (the name is the shape kind).
THING_CATEGORIES: List[Dict] = [
    {"id": 1, "name": "disc", "color": [220, 20, 60], "isthing": 1},
    {"id": 2, "name": "rectangle", "color": [0, 130, 200], "isthing": 1},
    {"id": 4, "name": "triangle", "color": [255, 180, 0], "isthing": 1},
    {"id": 5, "name": "ellipse", "color": [60, 180, 75], "isthing": 1},
    {"id": 7, "name": "star", "color": [145, 30, 180], "isthing": 1},
    {"id": 9, "name": "hexagon", "color": [240, 50, 230], "isthing": 1},
]
# Stuff: background regions of the panoptic scenes (the name is the region kind).
STUFF_CATEGORIES: List[Dict] = [
    {"id": 101, "name": "sky", "color": [135, 206, 235], "isthing": 0},
    {"id": 105, "name": "ground", "color": [139, 90, 43], "isthing": 0},
    {"id": 110, "name": "water", "color": [0, 105, 148], "isthing": 0},
]


def coco_categories(include_stuff: bool) -> List[Dict]:
    """``categories`` of a COCO json: things (instances json) or things + stuff (panoptic)."""
    cats = THING_CATEGORIES + (STUFF_CATEGORIES if include_stuff else [])
    return [{**c, "supercategory": "thing" if c["isthing"] else "stuff"} for c in cats]


def instances_metadata() -> Dict:
    """Like D2's ``_get_builtin_metadata("coco")``: things only, ids -> [0, #things)."""
    return coco_instances_metadata(coco_categories(include_stuff=False))


def panoptic_separated_metadata() -> Dict:
    """Like D2's ``_get_builtin_metadata("coco_panoptic_separated")``: things as in
    :func:`instances_metadata`; semantic class 0 is "things", stuff ids -> [1, #stuff]."""
    stuff_map = {c["id"]: i + 1 for i, c in enumerate(STUFF_CATEGORIES)}
    stuff_map[0] = 0
    ret = {
        "stuff_classes": ["things"] + [c["name"] for c in STUFF_CATEGORIES],
        "stuff_colors": [[82, 18, 128]] + [c["color"] for c in STUFF_CATEGORIES],
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }
    ret.update(instances_metadata())
    return ret


def panoptic_standard_metadata() -> Dict:
    """Like D2's ``_get_builtin_metadata("coco_panoptic_standard")``: one contiguous id space
    over things + stuff, replicated under ``thing_*`` and ``stuff_*`` as D2 does."""
    return coco_panoptic_metadata(coco_categories(include_stuff=True))
