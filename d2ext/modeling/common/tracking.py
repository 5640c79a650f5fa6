"""Track ids for per-frame instance predictions: mask-IoU association across frames.

Models that detect each frame on its own (YOLACT, YolactEdge) give no identity over time; the
:class:`Tracker` links each frame's instances to the tracks of the previous frames so that video
output is temporally consistent (colours per track in ``tools/demo.py --video``, the tracks of
``d2ext.evaluation.video_ap.instances_to_tracks``).

Association, per frame: the IoU between every live track's last region and every detection's
region (``pred_masks``; ``pred_boxes`` for box-only models), optionally only between the same
class, then a one-to-one matching (Hungarian: the largest total IoU; greedy: the highest IoU pair
first) that keeps pairs with IoU >= ``iou_threshold``. A matched detection takes the track's id;
an unmatched one starts a new track with the next unused id (ids count from 0 after each
:meth:`Tracker.reset` and are never reused within a video). A track without a match stays alive
for ``max_missed`` frames (an occlusion, a missed detection), matched against its last region.
"""

from typing import List, Optional, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, Instances, pairwise_iou
from scipy.optimize import linear_sum_assignment

__all__ = ["MATCH_METHODS", "Tracker", "mask_iou", "match_by_iou"]

MATCH_METHODS = ("hungarian", "greedy")
_CHUNK_ELEMENTS = 1 << 24  # mask_iou's float working set (elements) per chunk of pixels


def mask_iou(masks1: torch.Tensor, masks2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of binary masks.

    Args:
        masks1: (N, H, W) bool (or 0/1) masks.
        masks2: (M, H, W) masks of the same H x W, on the same device.

    Returns:
        (N, M) float32 IoU; 0 where both masks are empty. Pixel counts are exact up to 2^24
        pixels per mask (float32 sums of 0/1).
    """
    if masks1.shape[1:] != masks2.shape[1:]:
        raise ValueError(
            f"mask_iou: masks of different sizes {tuple(masks1.shape[1:])} and "
            f"{tuple(masks2.shape[1:])}"
        )
    a, b = masks1.flatten(1).bool(), masks2.flatten(1).bool()
    inter = torch.zeros((len(a), len(b)), dtype=torch.float32, device=a.device)
    # the pixels in chunks: float copies of all masks of a 1080p frame would take ~1 GB
    step = max(1, _CHUNK_ELEMENTS // max(1, len(a) + len(b)))
    for start in range(0, a.shape[1], step):
        chunk = slice(start, start + step)
        inter += a[:, chunk].float() @ b[:, chunk].float().T
    union = a.sum(dim=1)[:, None].float() + b.sum(dim=1)[None, :].float() - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def match_by_iou(
    iou,
    *,
    iou_threshold: float,
    method: str = "hungarian",
    allowed=None,
) -> Tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of rows (tracks) to columns (detections) on an IoU matrix.

    Args:
        iou: (N, M) IoU (tensor on any device, or array).
        iou_threshold: in (0, 1]; only pairs with IoU >= it may match.
        method: "hungarian" (``scipy.optimize.linear_sum_assignment``: the largest total IoU
            over the pairs above the threshold) or "greedy" (repeatedly the highest-IoU pair
            whose row and column are both free; ties go to the lower row, then column).
        allowed: optional (N, M) bool; False pairs never match (e.g. different classes).

    Returns:
        (rows, cols): int64 arrays of the matched pairs, sorted by column.
    """
    if method not in MATCH_METHODS:
        raise ValueError(f"match_by_iou: method must be one of {MATCH_METHODS}, got {method!r}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"match_by_iou: iou_threshold must be in (0, 1], got {iou_threshold}")
    if isinstance(iou, torch.Tensor):
        iou = iou.detach().cpu().numpy()
    iou = np.asarray(iou, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"match_by_iou: iou must be (N, M), got shape {iou.shape}")
    valid = iou >= iou_threshold
    if allowed is not None:
        if isinstance(allowed, torch.Tensor):
            allowed = allowed.detach().cpu().numpy()
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != iou.shape:
            raise ValueError(f"match_by_iou: allowed {allowed.shape} != iou {iou.shape}")
        valid &= allowed
    if not valid.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    if method == "hungarian":
        # invalid pairs count 0, valid ones >= the threshold > 0: maximising the total never
        # trades a valid pair for an invalid one, and the invalid ones are dropped after
        rows, cols = linear_sum_assignment(np.where(valid, iou, 0.0), maximize=True)
        keep = valid[rows, cols]
        rows, cols = rows[keep], cols[keep]
    else:
        candidates = np.flatnonzero(valid)
        order = candidates[np.argsort(-iou.ravel()[candidates], kind="stable")]
        row_free = np.ones(iou.shape[0], dtype=bool)
        col_free = np.ones(iou.shape[1], dtype=bool)
        rows, cols = [], []
        for r, c in zip(*np.unravel_index(order, iou.shape)):
            if row_free[r] and col_free[c]:
                row_free[r] = col_free[c] = False
                rows.append(r)
                cols.append(c)
        rows, cols = np.asarray(rows), np.asarray(cols)
    order = np.argsort(cols)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


class Tracker:
    """Stateful track-id assignment over the frames of one video (:meth:`reset` between videos).

    ``tracker.update(instances)`` sets ``instances.pred_track_ids`` ((N,) int64, on the
    instances' device): the track id of each instance, or -1 for instances scoring below
    ``min_score`` (they neither match nor start tracks).

    Args:
        iou_threshold: in (0, 1]; the least mask IoU (box IoU for box-only models) between a
            track's last region and a detection for them to match.
        method: "hungarian" or "greedy" (see :func:`match_by_iou`).
        same_class: only match a track to a detection of the class it was last seen with.
        max_missed: frames a track survives without a match (0: it ends at its first miss).
        min_score: instances with ``scores`` below it get id -1 (``tools/demo.py --video``
            passes its confidence threshold, so the drawn instances are the tracked ones).
    """

    def __init__(
        self,
        *,
        iou_threshold: float = 0.3,
        method: str = "hungarian",
        same_class: bool = True,
        max_missed: int = 3,
        min_score: float = 0.0,
    ):
        if method not in MATCH_METHODS:
            raise ValueError(f"Tracker: method must be one of {MATCH_METHODS}, got {method!r}")
        if not 0 < iou_threshold <= 1:
            raise ValueError(f"Tracker: iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_missed < 0:
            raise ValueError(f"Tracker: max_missed must be >= 0, got {max_missed}")
        self.iou_threshold = iou_threshold
        self.method = method
        self.same_class = same_class
        self.max_missed = max_missed
        self.min_score = min_score
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new video): ids start again from 0."""
        self.next_id = 0
        self.frame_index = 0
        self._image_size: Optional[Tuple[int, int]] = None
        self._kind: Optional[str] = None  # "masks" or "boxes", fixed by the first frame
        self._ids: List[int] = []
        self._missed: List[int] = []
        self._classes: Optional[torch.Tensor] = None
        self._regions = None  # (T, H, W) bool masks, or Boxes (T, 4)

    @property
    def track_ids(self) -> List[int]:
        """Ids of the live tracks (matched in one of the last ``max_missed + 1`` frames)."""
        return list(self._ids)

    def update(self, instances: Instances) -> Instances:
        """Assign ``instances`` (one frame's predictions, in frame order) to tracks; sets
        ``pred_track_ids`` on them (in place) and returns them."""
        size = tuple(int(s) for s in instances.image_size)
        if self._image_size is not None and size != self._image_size:
            raise ValueError(
                f"Tracker: frame {self.frame_index} is {size[0]}x{size[1]} but the video's "
                f"frames so far are {self._image_size[0]}x{self._image_size[1]}; call reset() "
                f"between videos"
            )
        kind = "masks" if instances.has("pred_masks") else "boxes"
        if not instances.has(f"pred_{kind}"):
            raise ValueError(
                f"Tracker: frame {self.frame_index} has neither pred_masks nor pred_boxes"
            )
        if self._kind is not None and kind != self._kind:
            raise ValueError(
                f"Tracker: frame {self.frame_index} has {kind} but the video's earlier frames "
                f"were tracked by {self._kind}"
            )
        if self.same_class and not instances.has("pred_classes"):
            raise ValueError("Tracker(same_class=True) needs pred_classes on the instances")
        self._image_size, self._kind = size, kind

        device = instances.pred_masks.device if kind == "masks" else instances.pred_boxes.device
        ids = torch.full((len(instances),), -1, dtype=torch.int64, device=device)
        tracked = torch.arange(len(instances), device=device)
        if self.min_score > 0 and instances.has("scores"):
            tracked = tracked[instances.scores >= self.min_score]
        detections = instances[tracked]
        regions = self._regions_of(detections)
        classes = detections.pred_classes if detections.has("pred_classes") else None

        track_rows = np.zeros(0, dtype=np.int64)
        det_cols = np.zeros(0, dtype=np.int64)
        if self._ids and len(detections):
            if kind == "masks":
                iou = mask_iou(self._regions, regions)
            else:
                iou = pairwise_iou(self._regions, regions)
            allowed = None
            if self.same_class:
                allowed = self._classes[:, None] == classes[None, :]
            track_rows, det_cols = match_by_iou(
                iou, iou_threshold=self.iou_threshold, method=self.method, allowed=allowed
            )

        det_ids = np.full(len(detections), -1, dtype=np.int64)
        det_ids[det_cols] = np.asarray(self._ids, dtype=np.int64)[track_rows]
        new = np.flatnonzero(det_ids < 0)  # in the model's order (by score for D2 models)
        det_ids[new] = np.arange(self.next_id, self.next_id + len(new))
        self.next_id += len(new)
        ids[tracked] = torch.as_tensor(det_ids, device=device)
        instances.pred_track_ids = ids

        self._update_tracks(det_ids, regions, classes, track_rows)
        self.frame_index += 1
        return instances

    def _regions_of(self, instances: Instances):
        if self._kind == "boxes":
            return instances.pred_boxes
        masks = instances.pred_masks
        # D2's models give bool masks; soft (float) masks are cut at 0.5, as D2's paste
        return masks if masks.dtype == torch.bool else masks >= 0.5

    def _update_tracks(self, det_ids, regions, classes, matched_rows) -> None:
        """The tracks after a frame: every tracked detection's (matched or new) with its region,
        then the unmatched old tracks still within ``max_missed``, with their last region."""
        unmatched = np.setdiff1d(np.arange(len(self._ids)), matched_rows)
        kept = [int(r) for r in unmatched if self._missed[r] < self.max_missed]
        self._missed = [0] * len(det_ids) + [self._missed[r] + 1 for r in kept]
        self._ids = [int(i) for i in det_ids] + [self._ids[r] for r in kept]
        if not kept:
            self._regions, self._classes = regions, classes
            return
        kept = torch.as_tensor(kept, dtype=torch.int64, device=regions.device)
        cat = torch.cat if self._kind == "masks" else Boxes.cat
        self._regions = cat([regions, self._regions[kept]])
        if classes is not None and self._classes is not None:
            self._classes = torch.cat([classes, self._classes[kept]])
        else:
            self._classes = None
