"""d2ext.utils.visualize.draw_panoptic_tracks: a video panoptic frame drawn with stuff as D2
draws it and each thing in the colour of its track, whatever its segment id."""

import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.structures import Instances

from d2ext.utils.visualize import draw_panoptic_tracks

H, W = 40, 60
META = Metadata(
    thing_classes=["car", "person"],
    stuff_classes=["road", "sky"],
    thing_colors=[(0, 0, 142), (220, 20, 60)],
    stuff_colors=[(128, 64, 128), (70, 130, 180)],
)


def _frame(track_ids, unlabelled=0):
    """Sky on top, road below, two things; ``unlabelled`` fills a corner with no segment."""
    panoptic = torch.full((H, W), 501, dtype=torch.int32)  # road (stuff 0)
    panoptic[:15] = 502  # sky (stuff 1)
    panoptic[20:30, 5:20] = 7  # thing segment -> instance 0
    panoptic[22:35, 35:50] = 9  # thing segment -> instance 1
    panoptic[-3:, -3:] = unlabelled
    segments = [
        {"id": 501, "category_id": 0, "isthing": False},
        {"id": 502, "category_id": 1, "isthing": False},
        {"id": 7, "category_id": 0, "isthing": True, "instance_id": 0, "score": 0.9},
        {"id": 9, "category_id": 1, "isthing": True, "instance_id": 1, "score": 0.8},
    ]
    instances = Instances((H, W), pred_track_ids=torch.tensor(track_ids))
    return {"panoptic_seg": (panoptic, segments), "instances": instances}


def _draw(pred):
    image = np.full((H, W, 3), 100, np.uint8)
    out = draw_panoptic_tracks(image, pred, META)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    return out


def _fill(image, rows, cols):
    """The most common colour of a region (its fill, not the outline or the label text)."""
    colours, counts = np.unique(image[rows, cols].reshape(-1, 3), axis=0, return_counts=True)
    return colours[counts.argmax()]


THING_0 = (slice(20, 30), slice(5, 20))
THING_1 = (slice(22, 35), slice(35, 50))


def test_things_take_their_track_colour():
    a = _draw(_frame([3, 4]))
    swapped = _draw(_frame([4, 3]))
    same = _draw(_frame([3, 4], unlabelled=1234))  # another unlabelled id: same drawing
    # the two things exchange fill colours when their tracks do; stuff does not change
    assert not np.array_equal(_fill(a, *THING_0), _fill(a, *THING_1))
    assert np.array_equal(_fill(a, *THING_0), _fill(swapped, *THING_1))
    assert np.array_equal(_fill(a, *THING_1), _fill(swapped, *THING_0))
    assert np.array_equal(a[5, 30], swapped[5, 30])
    assert np.array_equal(a, same)


def test_only_stuff():
    pred = _frame([])
    panoptic, segments = pred["panoptic_seg"]
    pred["panoptic_seg"] = (panoptic, [s for s in segments if not s["isthing"]])
    out = _draw(pred)
    assert not np.array_equal(out[5, 30], np.full(3, 100, np.uint8))  # sky drawn
