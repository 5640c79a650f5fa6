"""YOLACT training targets and losses (the original ``MultiBoxLoss`` with its defaults).

Coordinates: anchors and GT boxes are XYXY in pixels of the S x S network input; crops and mask
areas use the same boxes normalised to [0, 1].
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_ioa, pairwise_iou
from torch import nn

from d2ext.layers.prototype_masks import crop_masks, prototype_masks

__all__ = ["YOLACTLoss", "match_with_forced_best", "downsample_mask_targets"]


def downsample_mask_targets(
    masks: torch.Tensor, size: Tuple[int, int], soft: bool = False
) -> torch.Tensor:
    """GT masks (G, H, W) to prototype size (G, h, w) as mask-loss targets.

    ``soft=False``: the original's bilinear downsampling binarised at 0.5. ``soft=True``: the
    area average, not binarised, i.e. the fraction of each prototype pixel the object covers, so
    the 0.5 level of the bilinearly upsampled prediction can follow a boundary inside a
    prototype pixel (an option of d2ext; the original's ``mask_proto_binarize_downsampled_gt``).
    """
    if masks.numel() == 0:
        return masks.new_zeros((masks.shape[0],) + tuple(size), dtype=torch.float32)
    m = masks[None].float()
    if soft:
        return F.interpolate(m, size, mode="area")[0]
    return (F.interpolate(m, size, mode="bilinear", align_corners=False)[0] > 0.5).float()


def match_with_forced_best(
    matcher: Matcher, iou: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """D2 ``Matcher`` thresholds plus the original's forcing: greedily, the globally best
    remaining (GT, anchor) pair is matched and both are removed, so every GT owns one anchor.

    Args:
        iou: (G, R) IoU of G GT boxes with R anchors.
    Returns:
        matched GT index (R,), label (R,) in {0: background, -1: ignore, 1: foreground}.
    """
    matches, labels = matcher(iou)
    if iou.numel() == 0:
        return matches, labels
    overlaps = iou.clone()
    for _ in range(overlaps.shape[0]):
        best_prior_overlap, best_prior_idx = overlaps.max(1)
        j = best_prior_overlap.max(0)[1]
        i = best_prior_idx[j]
        overlaps[:, i] = -1
        overlaps[j, :] = -1
        matches[i] = j
        labels[i] = 1
    return matches, labels


class YOLACTLoss(nn.Module):
    """Box smooth-L1, OHEM softmax CE, prototype mask BCE and semantic-seg BCE losses."""

    @configurable
    def __init__(
        self,
        *,
        box2box_transform: Box2BoxTransform,
        anchor_matcher: Matcher,
        crowd_iou_threshold: float = 0.7,
        neg_pos_ratio: int = 3,
        box_weight: float = 1.5,
        cls_weight: float = 1.0,
        mask_weight: float = 6.125,
        sem_seg_weight: float = 1.0,
        masks_to_train: int = 100,
        soft_mask_targets: bool = False,
        mask_iou_weight: float = 25.0,
        mask_iou_min_gt_area: float = 25.0,
    ):
        super().__init__()
        self.box2box_transform = box2box_transform
        self.anchor_matcher = anchor_matcher
        self.crowd_iou_threshold = crowd_iou_threshold
        self.neg_pos_ratio = neg_pos_ratio
        self.box_weight = box_weight
        self.cls_weight = cls_weight
        self.mask_weight = mask_weight
        self.sem_seg_weight = sem_seg_weight
        self.masks_to_train = masks_to_train
        self.soft_mask_targets = soft_mask_targets
        self.mask_iou_weight = mask_iou_weight
        self.mask_iou_min_gt_area = mask_iou_min_gt_area

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.YOLACT
        return {
            "box2box_transform": Box2BoxTransform(weights=c.BBOX_REG_WEIGHTS),
            "anchor_matcher": Matcher(
                c.IOU_THRESHOLDS, c.IOU_LABELS, allow_low_quality_matches=False
            ),
            "crowd_iou_threshold": c.CROWD_IOU_THRESHOLD,
            "neg_pos_ratio": c.NEG_POS_RATIO,
            "box_weight": c.LOSS_BOX_WEIGHT,
            "cls_weight": c.LOSS_CLS_WEIGHT,
            "mask_weight": c.LOSS_MASK_WEIGHT,
            "sem_seg_weight": c.LOSS_SEM_SEG_WEIGHT,
            "masks_to_train": c.MASKS_TO_TRAIN,
            "soft_mask_targets": c.MASK_SOFT_TARGETS,
            "mask_iou_weight": c.LOSS_MASK_IOU_WEIGHT,
            "mask_iou_min_gt_area": c.MASK_IOU_MIN_GT_AREA,
        }

    @torch.no_grad()
    def label_anchors(
        self,
        anchors: Boxes,
        gt_boxes: Boxes,
        gt_classes: torch.Tensor,
        crowd_boxes: Optional[Boxes],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per image: class targets (R,) (-1 ignore, 0 background, c + 1 foreground) and the
        matched GT index (R,) (meaningful where the target is > 0)."""
        iou = pairwise_iou(gt_boxes, anchors)
        matches, labels = match_with_forced_best(self.anchor_matcher, iou)
        labels = labels.long()
        cls_t = (
            torch.where(labels > 0, gt_classes[matches] + 1, labels) if len(gt_classes) else labels
        )
        if crowd_boxes is not None and len(crowd_boxes) and self.crowd_iou_threshold < 1:
            # fraction of each anchor covered by a crowd box (the original's iscrowd jaccard)
            best_crowd = pairwise_ioa(crowd_boxes, anchors).max(dim=0).values  # inter / anchor area
            cls_t[(cls_t <= 0) & (best_crowd > self.crowd_iou_threshold)] = -1
        return cls_t, matches

    def forward(
        self,
        anchors: Boxes,
        targets: List[Dict[str, torch.Tensor]],
        pred_deltas: torch.Tensor,
        pred_logits: torch.Tensor,
        pred_coeffs: torch.Tensor,
        protos: torch.Tensor,
        sem_seg_logits: Optional[torch.Tensor],
        input_size: int,
        mask_iou_net: Optional[nn.Module] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            anchors: (R, 4) XYXY pixels of the S x S input.
            targets: per image, ``boxes`` (G, 4) XYXY normalised, ``classes`` (G,) 0-based,
                ``masks`` (G, H, W) float 0/1 at any resolution, ``crowd_boxes`` (Gc, 4)
                normalised or None.
            pred_deltas (N, R, 4), pred_logits (N, R, C + 1), pred_coeffs (N, R, k) (tanh'd),
            protos (N, k, Hp, Wp) (ReLU'd), sem_seg_logits (N, C, h3, w3) or None.
            input_size: S.
            mask_iou_net: YOLACT++'s :class:`MaskIoUNet`, trained here when given
                (``loss_mask_iou``).
        """
        n = pred_deltas.shape[0]
        cls_t, box_t, matches = [], [], []
        for tgt in targets:
            gt = Boxes(tgt["boxes"] * input_size)
            crowd = (
                Boxes(tgt["crowd_boxes"] * input_size)
                if tgt.get("crowd_boxes") is not None
                else None
            )
            c, m = self.label_anchors(anchors, gt, tgt["classes"], crowd)
            cls_t.append(c)
            matches.append(m)
            box_t.append(gt.tensor[m] if len(gt) else anchors.tensor)
        cls_t = torch.stack(cls_t)  # (N, R)
        pos = cls_t > 0
        num_pos = pos.sum(1)
        total_pos = num_pos.sum().clamp(min=1).float()

        deltas_t = torch.stack(
            [self.box2box_transform.get_deltas(anchors.tensor, b) for b in box_t]
        )
        loss_box = (
            F.smooth_l1_loss(pred_deltas[pos], deltas_t[pos], reduction="sum") * self.box_weight
        )

        loss_mask, iou_samples = self._mask_loss(targets, cls_t, matches, pred_coeffs, protos)
        losses = {
            "loss_box": loss_box / total_pos,
            "loss_cls": self._ohem_cls_loss(pred_logits, cls_t, pos, num_pos) / total_pos,
            "loss_mask": loss_mask / total_pos,
        }
        if mask_iou_net is not None:
            losses["loss_mask_iou"] = self._mask_iou_loss(mask_iou_net, *iou_samples) / total_pos
        if sem_seg_logits is not None:
            losses["loss_sem_seg"] = self._sem_seg_loss(sem_seg_logits, targets) / n
        return losses

    def _ohem_cls_loss(self, logits, cls_t, pos, num_pos) -> torch.Tensor:
        # rank negatives by logsumexp(logits) - logit_bg = -log p(background): a smooth
        # "best class vs background" margin (the original, ohem_use_most_confident=False)
        with torch.no_grad():
            rank_loss = torch.logsumexp(logits, dim=2) - logits[:, :, 0]
            rank_loss[pos] = 0
            rank_loss[cls_t < 0] = 0
            _, loss_idx = rank_loss.sort(1, descending=True)
            _, idx_rank = loss_idx.sort(1)
            num_neg = torch.clamp(self.neg_pos_ratio * num_pos, max=pos.shape[1] - 1)
            neg = idx_rank < num_neg[:, None]
            neg &= ~pos & (cls_t >= 0)
        sel = pos | neg
        return F.cross_entropy(logits[sel], cls_t[sel], reduction="sum") * self.cls_weight

    def _mask_loss(self, targets, cls_t, matches, coeffs, protos):
        """The mask loss (before / num_pos), and the samples of YOLACT++'s mask-IoU loss: cropped
        predicted masks (M, Hp, Wp), their IoU with the GT (M,) and their 0-based classes (M,)."""
        hp, wp = protos.shape[-2:]
        loss = protos.sum() * 0.0
        iou_inputs, iou_targets, iou_classes = [], [], []
        for i, tgt in enumerate(targets):
            pos_idx = torch.nonzero(cls_t[i] > 0).squeeze(1)
            if pos_idx.numel() == 0:
                continue
            with torch.no_grad():
                gt_masks = downsample_mask_targets(tgt["masks"], (hp, wp), self.soft_mask_targets)
                gt_idx = matches[i][pos_idx]
            old_num = pos_idx.numel()
            if old_num > self.masks_to_train:
                select = torch.randperm(old_num, device=pos_idx.device)[: self.masks_to_train]
                pos_idx, gt_idx = pos_idx[select], gt_idx[select]
            boxes = tgt["boxes"][gt_idx]
            pred = crop_masks(prototype_masks(protos[i], coeffs[i, pos_idx]), boxes)
            mask_t = gt_masks[gt_idx]
            bce = F.binary_cross_entropy(pred.clamp(0, 1), mask_t, reduction="none").sum(dim=(1, 2))
            # per-instance normalisation by the GT box area in prototype pixels
            area = ((boxes[:, 2] - boxes[:, 0]) * wp) * ((boxes[:, 3] - boxes[:, 1]) * hp)
            loss = loss + (bce / area).sum() * (old_num / pos_idx.numel())
            # YOLACT++: the IoU of the binarised prediction with the target, for masks whose
            # target covers more than mask_iou_min_gt_area prototype pixels
            big = mask_t.sum(dim=(1, 2)) > self.mask_iou_min_gt_area
            if big.any():
                with torch.no_grad():
                    p_bin = (pred[big] > 0.5).float()
                    inter = (p_bin * mask_t[big]).sum(dim=(1, 2))
                    union = p_bin.sum(dim=(1, 2)) + mask_t[big].sum(dim=(1, 2)) - inter
                    iou_targets.append(inter / union)
                iou_inputs.append(pred[big])
                iou_classes.append(tgt["classes"][gt_idx[big]])
        if iou_inputs:
            samples = (torch.cat(iou_inputs), torch.cat(iou_targets), torch.cat(iou_classes))
        else:
            samples = (protos.new_zeros((0, hp, wp)), protos.new_zeros((0,)), cls_t.new_zeros((0,)))
        return loss * self.mask_weight, samples

    def _mask_iou_loss(self, net: nn.Module, masks, iou_t, classes) -> torch.Tensor:
        # gradients reach the masks too, as in the original (its maskiou input is not detached)
        pred = net(masks[:, None])
        if pred.shape[0] == 0:
            return pred.sum() * 0.0 + sum(p.sum() for p in net.parameters()) * 0.0
        pred = pred.gather(1, classes[:, None]).squeeze(1)
        return F.smooth_l1_loss(pred, iou_t, reduction="sum") * self.mask_iou_weight

    def _sem_seg_loss(self, logits: torch.Tensor, targets) -> torch.Tensor:
        n, c, h, w = logits.shape
        loss = logits.sum() * 0.0
        for i, tgt in enumerate(targets):
            with torch.no_grad():
                seg_t = torch.zeros_like(logits[i])
                if len(tgt["classes"]):
                    m = F.interpolate(
                        tgt["masks"][None].float(), (h, w), mode="bilinear", align_corners=False
                    )[0]
                    m = (m > 0.5).float()
                    for cls, mask in zip(tgt["classes"].tolist(), m):
                        seg_t[cls] = torch.maximum(seg_t[cls], mask)
            loss = loss + F.binary_cross_entropy_with_logits(logits[i], seg_t, reduction="sum")
        return loss / h / w * self.sem_seg_weight
