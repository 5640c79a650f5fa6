"""VPSNet's track head (Kim et al., CVPR 2020, sec. 3.2; from MaskTrack R-CNN): an embedding of
each RoI's pooled features, matched by dot product against the objects of a reference frame plus
a "new object" column.

Training: the target frame's sampled proposals against the reference frame's GT objects; a
foreground proposal's class is ``1 + k`` for the k-th reference object with its track id, 0 (the
new-object column) when its object is not in the reference frame; background proposals carry no
loss. Inference: :class:`TrackMemory` matches each frame's detections against every object seen
so far in the video.

Source: mcahny/vps @ 138503e: ``mmdet/models/track_heads/track_head.py`` (layers 50-61, init
68-71, scores 73-91, forward 93-132, loss 135-174), the targets of
``mmdet/datasets/cityscapes_vps.py`` 129-132 and ``mmdet/core/bbox/bbox_target.py``
(``bbox_id_target_single`` 93-124), the memory of
``mmdet/models/detectors/panoptic_fusetrack.py`` (``simple_test_bboxes`` 374-471), settings from
``configs/cityscapes/fusetrack.py`` (2 FCs of 1024, match_coeff [1, 2, 10], loss weight 0.5).

Deliberate differences from the original:

* The loss counts an image with exactly one foreground proposal; the original skips it
  (``torch.nonzero(w).squeeze()`` is 0-d there) while still dividing by the number of images.
* Duplicate track ids within one reference frame are an error; the original takes the first.
* The memory keeps embeddings instead of RoI features (the same values: it re-embedded the kept
  features with the same weights each frame).
* The video boundary is an explicit :meth:`TrackMemory.reset`, not the Cityscapes-VPS frame id.
"""

from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.structures import Boxes, pairwise_iou
from torch import nn

__all__ = [
    "TrackHead",
    "TrackMemory",
    "comprehensive_scores",
    "match_logits",
    "resolve_matches",
    "track_targets",
]


def match_logits(embeddings: torch.Tensor, ref_embeddings: torch.Tensor) -> torch.Tensor:
    """(N, D) and (M, D) embeddings -> (N, 1 + M) logits: a zero "new object" column, then the
    dot products ``embeddings @ ref_embeddings.T``."""
    if embeddings.dim() != 2 or ref_embeddings.dim() != 2:
        raise ValueError(
            f"match_logits wants (N, D) and (M, D) embeddings, got "
            f"{tuple(embeddings.shape)} and {tuple(ref_embeddings.shape)}"
        )
    if embeddings.shape[1] != ref_embeddings.shape[1]:
        raise ValueError(
            f"match_logits: embedding sizes differ, {embeddings.shape[1]} vs "
            f"{ref_embeddings.shape[1]}"
        )
    prod = embeddings @ ref_embeddings.T
    return torch.cat([prod.new_zeros(len(embeddings), 1), prod], dim=1)


def track_targets(
    gt_track_ids: torch.Tensor, foreground: torch.Tensor, ref_track_ids: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Match classes and weights of one image's sampled proposals.

    Args:
        gt_track_ids: (R,) track id of each proposal's matched GT object (only read where
            ``foreground``).
        foreground: (R,) bool, the proposal was sampled as foreground.
        ref_track_ids: (M,) track ids of the reference frame's GT objects, in the order their
            RoI features are given.
    Returns:
        targets: (R,) int64, ``1 + k`` with ``ref_track_ids[k] == gt_track_ids[r]``, 0 when the
        object is not in the reference frame (and for background).
        weights: (R,) float, 1 for foreground, 0 for background.
    """
    if len(gt_track_ids) != len(foreground):
        raise ValueError(
            f"track_targets: {len(gt_track_ids)} track ids vs {len(foreground)} foreground flags"
        )
    if len(torch.unique(ref_track_ids)) != len(ref_track_ids):
        raise ValueError(f"track_targets: duplicate reference track ids {ref_track_ids.tolist()}")
    equal = gt_track_ids.view(-1, 1) == ref_track_ids.view(1, -1).to(gt_track_ids.device)
    # column 0 is the "new object" dummy: a proposal whose object is not in the reference frame
    # (every proposal when the reference frame has no thing) gets target 0
    equal = torch.cat([equal.new_zeros(len(equal), 1), equal], dim=1)
    found = equal.any(dim=1) & foreground.bool()
    targets = torch.where(found, equal.float().argmax(dim=1), torch.zeros_like(found).long())
    return targets.long(), foreground.float()


def comprehensive_scores(
    logits: torch.Tensor,
    det_scores: torch.Tensor,
    ious: torch.Tensor,
    same_class: torch.Tensor,
    *,
    match_coeff: Sequence[float] = (1.0, 2.0, 10.0),
    dummy_iou: float = 0.0,
) -> torch.Tensor:
    """The inference score of every (detection, memory column) pair (``compute_comp_scores``):
    ``log_softmax(logits) + c0 log(det_scores) + c1 [dummy_iou, ious] + c2 [1, same_class]``.

    Args:
        logits: (N, 1 + M) :func:`match_logits`.
        det_scores: (N,) detection probability of the predicted class.
        ious: (N, M) box IoU of each detection with each memory entry.
        same_class: (N, M) the predicted classes agree.
    Returns:
        (N, 1 + M), column 0 the new-object score.
    """
    n, m1 = logits.shape
    if det_scores.shape != (n,) or ious.shape != (n, m1 - 1) or same_class.shape != ious.shape:
        raise ValueError(
            f"comprehensive_scores: logits {tuple(logits.shape)}, det_scores "
            f"{tuple(det_scores.shape)}, ious {tuple(ious.shape)}, same_class "
            f"{tuple(same_class.shape)} do not agree"
        )
    c0, c1, c2 = match_coeff
    ious = torch.cat([ious.new_full((n, 1), dummy_iou), ious.to(logits.dtype)], dim=1)
    same = torch.cat([logits.new_ones(n, 1), same_class.to(logits.dtype)], dim=1)
    return (
        F.log_softmax(logits, dim=1) + c0 * torch.log(det_scores).view(n, 1) + c1 * ious + c2 * same
    )


def resolve_matches(
    scores: torch.Tensor, *, min_score: float = -100.0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy one-to-one assignment of detections to memory entries, the original's loop.

    Each detection takes its best column. Visiting detections in order, one whose best column is
    entry ``k`` takes ``k`` when its score beats both ``min_score`` and the score of the
    detection holding ``k`` so far, which then loses it (ties: the earlier one keeps it).

    Args:
        scores: (N, 1 + M) :func:`comprehensive_scores`.
    Returns:
        matched: (N,) int64 memory index, -1 for a new object.
        chose_new: (N,) bool, the best column was the new-object column (the rest of the -1s
        lost their entry or scored too low; :class:`TrackMemory` numbers these after).
    """
    best, column = scores.max(dim=1)
    best, column = best.tolist(), column.tolist()
    matched = [-1] * len(column)
    holder: Dict[int, int] = {}
    for i, col in enumerate(column):
        if col == 0:
            continue
        k = col - 1
        held = holder.get(k)
        if best[i] > (min_score if held is None else max(min_score, best[held])):
            if held is not None:
                matched[held] = -1
            matched[i] = k
            holder[k] = i
    device = scores.device
    return (
        torch.tensor(matched, dtype=torch.int64, device=device),
        torch.tensor([c == 0 for c in column], dtype=torch.bool, device=device),
    )


class TrackHead(nn.Module):
    """RoI features -> flatten -> FC -> ReLU -> ... -> FC (no ReLU after the last) embedding."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_fc: int = 2,
        fc_dim: int = 1024,
        loss_weight: float = 0.5,
        match_coeff: Sequence[float] = (1.0, 2.0, 10.0),
        dummy_iou: float = 0.0,
        min_match_score: float = -100.0,
    ):
        """
        Args:
            input_shape: the pooled RoI features' (channels, height, width).
            num_fc, fc_dim: the embedding's FC layers.
            loss_weight: multiplies the match cross entropy.
            match_coeff, dummy_iou, min_match_score: inference, see :class:`TrackMemory`.
        """
        super().__init__()
        if num_fc < 1 or len(match_coeff) != 3:
            raise ValueError(
                f"TrackHead: num_fc must be >= 1 and match_coeff 3 numbers, got {num_fc}, "
                f"{list(match_coeff)}"
            )
        self.input_shape = (input_shape.channels, input_shape.height, input_shape.width)
        dims = [input_shape.channels * input_shape.height * input_shape.width] + [fc_dim] * num_fc
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for fc in self.fcs:
            nn.init.normal_(fc.weight, 0, 0.01)
            nn.init.zeros_(fc.bias)
        self.loss_weight = loss_weight
        self.match_coeff = tuple(match_coeff)
        self.dummy_iou = dummy_iou
        self.min_match_score = min_match_score

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.VPSNET.TRACK_HEAD
        return {
            "input_shape": input_shape,
            "num_fc": head.NUM_FC,
            "fc_dim": head.FC_DIM,
            "loss_weight": head.LOSS_WEIGHT,
            "match_coeff": head.MATCH_COEFF,
            "dummy_iou": head.DUMMY_IOU,
            "min_match_score": head.MIN_MATCH_SCORE,
        }

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """(R, C, h, w) pooled RoI features -> (R, fc_dim) embeddings."""
        if features.dim() != 4 or tuple(features.shape[1:]) != self.input_shape:
            raise ValueError(
                f"TrackHead: RoI features must be (R, *{self.input_shape}), got "
                f"{tuple(features.shape)}"
            )
        x = features.flatten(1)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1:
                x = F.relu(x)
        return x

    def forward(
        self,
        features: torch.Tensor,
        ref_features: torch.Tensor,
        num_per_image: Sequence[int],
        ref_num_per_image: Sequence[int],
    ) -> List[torch.Tensor]:
        """
        Args:
            features: (R, C, h, w) RoI features of the target frames' proposals, image by image.
            ref_features: (M, C, h, w) RoI features of the reference frames' GT boxes.
            num_per_image, ref_num_per_image: rows of each image in those, same batch size.
        Returns:
            Per image, (R_i, 1 + M_i) :func:`match_logits`.
        """
        if len(num_per_image) != len(ref_num_per_image):
            raise ValueError(
                f"TrackHead: {len(num_per_image)} target images vs {len(ref_num_per_image)} "
                "reference images"
            )
        emb = self.embed(features).split(list(num_per_image))
        ref_emb = self.embed(ref_features).split(list(ref_num_per_image))
        return [match_logits(e, r) for e, r in zip(emb, ref_emb)]

    def losses(
        self,
        logits: Sequence[torch.Tensor],
        targets: Sequence[torch.Tensor],
        weights: Sequence[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """``loss_weight`` x the mean over images of ``sum_r w_r CE_r / max(#{w_r > 0}, 1)``
        (the original's ``cross_entropy(reduce=True)`` per image, averaged).

        Args:
            logits: per image (R_i, 1 + M_i), :meth:`forward`.
            targets, weights: per image (R_i,), :func:`track_targets`.
        """
        if not len(logits) == len(targets) == len(weights) or not logits:
            raise ValueError(
                f"TrackHead.losses: {len(logits)} logits, {len(targets)} targets, "
                f"{len(weights)} weights (one per image, at least one image)"
            )
        per_image = []
        for score, target, weight in zip(logits, targets, weights):
            raw = F.cross_entropy(score, target, reduction="none")
            per_image.append((raw * weight).sum() / (weight > 0).sum().clamp(min=1))
        return {"loss_match": torch.stack(per_image).mean() * self.loss_weight}

    def new_memory(self) -> "TrackMemory":
        """An empty :class:`TrackMemory` with this head's inference settings."""
        return TrackMemory(
            match_coeff=self.match_coeff,
            dummy_iou=self.dummy_iou,
            min_match_score=self.min_match_score,
        )


class TrackMemory:
    """Every object seen in the current video: its id (= its row), last embedding, last box and
    the class it was first detected with.

    :meth:`update` per frame, :meth:`reset` before each video. Entries are never removed: a
    detection can match any object seen earlier in the video (the original has no frame
    limit), so a thing that leaves and re-enters may get its old id back. A match replaces the
    entry's embedding and box (not its class: the original keeps the first one); a new object
    is appended with the next id. Ids count from 0 after a reset. A frame with no detection
    leaves the memory as it is.
    """

    def __init__(
        self,
        *,
        match_coeff: Sequence[float] = (1.0, 2.0, 10.0),
        dummy_iou: float = 0.0,
        min_match_score: float = -100.0,
    ):
        self.match_coeff = tuple(match_coeff)
        self.dummy_iou = dummy_iou
        self.min_match_score = min_match_score
        self.reset()

    def reset(self) -> None:
        """Forget everything (call at the start of each video)."""
        self.embeddings = None
        self.boxes = None
        self.classes = None

    def __len__(self) -> int:
        return 0 if self.embeddings is None else len(self.embeddings)

    def update(
        self,
        embeddings: torch.Tensor,
        boxes: Union[Boxes, torch.Tensor],
        classes: torch.Tensor,
        scores: torch.Tensor,
    ) -> torch.Tensor:
        """Assign track ids to one frame's detections and update the memory.

        Args:
            embeddings: (N, D) :meth:`TrackHead.embed` of the detections' RoI features.
            boxes: (N, 4) XYXY boxes, in one coordinate frame for the whole video.
            classes: (N,) predicted classes.
            scores: (N,) probability of the predicted class, in (0, 1].
        Returns:
            (N,) int64 track ids.
        """
        boxes = boxes.tensor if isinstance(boxes, Boxes) else boxes
        n = len(embeddings)
        if embeddings.dim() != 2 or boxes.shape != (n, 4) or classes.shape != (n,):
            raise ValueError(
                f"TrackMemory.update: embeddings {tuple(embeddings.shape)}, boxes "
                f"{tuple(boxes.shape)}, classes {tuple(classes.shape)} do not describe N "
                "detections"
            )
        if scores.shape != (n,):
            raise ValueError(f"TrackMemory.update: scores {tuple(scores.shape)} for {n} detections")
        if len(self) and embeddings.shape[1] != self.embeddings.shape[1]:
            raise ValueError(
                f"TrackMemory.update: embedding size {embeddings.shape[1]} differs from the "
                f"memory's {self.embeddings.shape[1]}"
            )
        embeddings, boxes, classes = embeddings.detach(), boxes.detach(), classes.detach()
        device = embeddings.device
        if n == 0:
            return torch.zeros(0, dtype=torch.int64, device=device)
        if not len(self):
            self.embeddings, self.boxes, self.classes = embeddings, boxes, classes
            return torch.arange(n, device=device)

        scores_all = comprehensive_scores(
            match_logits(embeddings, self.embeddings),
            scores.detach().to(embeddings.dtype),
            pairwise_iou(Boxes(boxes), Boxes(self.boxes)),
            classes.view(-1, 1) == self.classes.view(1, -1),
            match_coeff=self.match_coeff,
            dummy_iou=self.dummy_iou,
        )
        matched, chose_new = resolve_matches(scores_all, min_score=self.min_match_score)
        hit = matched >= 0
        self.embeddings = self.embeddings.clone()
        self.boxes = self.boxes.clone()
        self.embeddings[matched[hit]] = embeddings[hit]
        self.boxes[matched[hit]] = boxes[hit]
        # new ids: first the detections that chose the new-object column, then those that lost
        # their entry to a better detection or scored too low, each group in detection order
        new = torch.cat([torch.nonzero(chose_new)[:, 0], torch.nonzero(~hit & ~chose_new)[:, 0]])
        ids = matched.clone()
        ids[new] = len(self) + torch.arange(len(new), device=device)
        self.embeddings = cat([self.embeddings, embeddings[new]])
        self.boxes = cat([self.boxes, boxes[new]])
        self.classes = cat([self.classes, classes[new]])
        return ids
