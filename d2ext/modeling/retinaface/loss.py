"""RetinaFace's training targets and loss (biubug6/Pytorch_Retinaface ``layers/modules/
multibox_loss.py`` ``MultiBoxLoss`` and ``utils/box_utils.py`` ``match``), reproduced exactly:

* **Matching** per image (IoU of faces and anchors): anchors with IoU >= 0.35 to their best face
  are positives; every face whose best anchor has IoU >= 0.2 is forced onto that anchor (its
  overlap set to 2); then, for every face in order (the ones below 0.2 included, a quirk kept),
  its best anchor is re-assigned to it, the last face winning a shared anchor. An image where no
  face reaches 0.2 trains as all background.
* **Labels**: a face with landmarks is +1, one without (the label file's -1) is -1; positives are
  the anchors with a non-zero label, the landmark loss only sees the +1 ones.
* **Loss**: smooth-L1 (beta 1, summed) on the box deltas of positives / N, softmax cross entropy
  on positives and the hardest negatives (OHEM, 7 per positive of the same image, ranked by the
  background loss) / N, smooth-L1 on the landmark deltas of landmarked positives / N_lm, with N
  and N_lm the batch's counts (at least 1); total = 2 * box + cls + landmark. An image without
  positives gets no negatives either (7 x 0), so a face-free image contributes no loss, as in
  the original; it still is a valid sample (no NaN, the graph kept).

Zero-area faces must not reach the box encoder (log(0); biubug6 issue #60): the mapper drops
them, and :func:`retinaface_targets` rejects them with an error naming the image.
"""

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances, pairwise_iou

from d2ext.modeling.common import Landmark2AnchorTransform

__all__ = ["match_anchors", "retinaface_targets", "retinaface_losses"]


def match_anchors(
    iou: torch.Tensor, labels: torch.Tensor, iou_threshold: float, forced_min_iou: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The original's ``match`` on an IoU matrix.

    Args:
        iou: (G, A) IoU of G >= 1 faces with A anchors.
        labels: (G,) +1 (landmarks) / -1 (no landmarks).
    Returns:
        matched (A,) int64 index of each anchor's face, and anchor labels (A,) in {-1, 0, +1}
        (0: background).
    """
    num_anchors = iou.shape[1]
    best_prior_iou, best_prior_idx = iou.max(dim=1)
    valid = best_prior_iou >= forced_min_iou
    if not bool(valid.any()):
        zeros = torch.zeros(num_anchors, dtype=torch.int64, device=iou.device)
        return zeros, zeros.clone()
    best_truth_iou, best_truth_idx = iou.max(dim=0)
    best_truth_iou = best_truth_iou.index_fill(0, best_prior_idx[valid], 2.0)
    # sequential "for j: best_truth_idx[best_prior_idx[j]] = j" over ALL faces: the last j wins
    last = torch.full((num_anchors,), -1, dtype=torch.int64, device=iou.device)
    faces = torch.arange(iou.shape[0], device=iou.device)
    last.scatter_reduce_(0, best_prior_idx, faces, reduce="amax")
    best_truth_idx = torch.where(last >= 0, last, best_truth_idx)
    anchor_labels = labels[best_truth_idx].clone()
    anchor_labels[best_truth_iou < iou_threshold] = 0
    return best_truth_idx, anchor_labels


def retinaface_targets(
    anchors: Boxes,
    instances: List[Instances],
    box2box: Box2BoxTransform,
    landmark_coder: Landmark2AnchorTransform,
    iou_threshold: float,
    forced_min_iou: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-anchor targets of a batch: labels (B, A) in {-1, 0, 1}, box deltas (B, A, 4) and
    landmark deltas (B, A, 2K) (meaningful where the label is non-zero / +1)."""
    labels, box_t, lm_t = [], [], []
    a = anchors.tensor
    for i, inst in enumerate(instances):
        gt = inst.gt_boxes.tensor
        num_kp = inst.gt_keypoints.tensor.shape[1] if inst.has("gt_keypoints") else 5
        if len(inst) == 0:
            labels.append(torch.zeros(len(a), dtype=torch.int64, device=a.device))
            box_t.append(a.new_zeros(len(a), 4))
            lm_t.append(a.new_zeros(len(a), 2 * num_kp))
            continue
        wh = gt[:, 2:] - gt[:, :2]
        if not bool((wh > 0).all()):
            bad = gt[(wh <= 0).any(dim=1)][0].tolist()
            raise ValueError(
                f"RetinaFace: image {i} of the batch has a face box with zero or negative size "
                f"{bad}; drop such faces in the mapper (they make the box targets log(0))"
            )
        if inst.has("gt_keypoints"):
            kp = inst.gt_keypoints.tensor
            face_labels = torch.where((kp[..., 2] > 0).all(dim=1), 1, -1)
            points = kp[..., :2]
        else:
            face_labels = torch.full((len(inst),), -1, dtype=torch.int64, device=a.device)
            points = gt.new_zeros(len(inst), num_kp, 2)
        idx, anchor_labels = match_anchors(
            pairwise_iou(inst.gt_boxes, anchors), face_labels, iou_threshold, forced_min_iou
        )
        labels.append(anchor_labels)
        box_t.append(box2box.get_deltas(a, gt[idx]))
        lm_t.append(landmark_coder.get_deltas(a, points[idx]))
    return torch.stack(labels), torch.stack(box_t), torch.stack(lm_t)


def retinaface_losses(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    landmark_deltas,
    labels: torch.Tensor,
    box_targets: torch.Tensor,
    landmark_targets: torch.Tensor,
    *,
    neg_pos_ratio: int,
) -> Dict[str, torch.Tensor]:
    """Unweighted losses ``loss_bbox``, ``loss_cls`` and (if ``landmark_deltas`` is not None)
    ``loss_landmark`` of a batch: cls_logits (B, A, 2), box_deltas (B, A, 4), landmark_deltas
    (B, A, 2K); labels and targets from :func:`retinaface_targets`."""
    pos = labels != 0
    num_pos = pos.sum(dim=1, keepdim=True)
    n = num_pos.sum().clamp(min=1).to(cls_logits.dtype)
    losses = {"loss_bbox": F.smooth_l1_loss(box_deltas[pos], box_targets[pos], reduction="sum") / n}
    if landmark_deltas is not None:
        pos_lm = labels > 0
        n_lm = pos_lm.sum().clamp(min=1).to(cls_logits.dtype)
        losses["loss_landmark"] = (
            F.smooth_l1_loss(landmark_deltas[pos_lm], landmark_targets[pos_lm], reduction="sum")
            / n_lm
        )
    # OHEM: rank every anchor's background loss, positives excluded, within its image
    target = pos.long()
    with torch.no_grad():
        flat = cls_logits.detach().reshape(-1, 2)
        bg_loss = torch.logsumexp(flat, dim=1) - flat.gather(1, target.reshape(-1, 1)).squeeze(1)
        bg_loss = bg_loss.reshape(labels.shape).masked_fill(pos, 0.0)
        _, order = bg_loss.sort(dim=1, descending=True)
        _, rank = order.sort(dim=1)
        num_neg = (neg_pos_ratio * num_pos).clamp(max=labels.shape[1] - 1)
        neg = rank < num_neg
    keep = pos | neg
    losses["loss_cls"] = F.cross_entropy(cls_logits[keep], target[keep], reduction="sum") / n
    return losses
