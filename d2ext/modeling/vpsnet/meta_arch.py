"""VPSNet (Kim et al., "Video Panoptic Segmentation", CVPR 2020) on d2ext's UPSNet: the target
frame's FPN features fused with a reference frame's (:class:`VPSNetFuse`, flow from a frozen
:class:`RAFTFlow`), UPSNet's heads on the fused features, and the track head
(:class:`TrackHead`) linking each frame's panoptic detections to the objects seen earlier in the
video (:class:`TrackMemory`).

Source: mcahny/vps @ 138503e, ``mmdet/models/detectors/panoptic_fusetrack.py``
(``PanopticFuseTrack``): training ``forward_train`` 147-353 (flow 172, fuse, UPSNet losses on
the fused target, track loss 261-273 of the target's sampled RoIs against the reference's GT
boxes pooled from the reference's own features), inference ``simple_test_bboxes`` 358-471 and
``simple_test`` 502-606 (tracking of the panoptic detections on the fused features, their ids
carried into the panoptic output); the reference frames of ``mmdet/datasets/cityscapes_vps.py``
(``prepare_test_img`` 137-148: the previous frame, the first frame of a video itself).

Deliberate differences from the original:

* The flow net is torchvision's RAFT-small (d2ext's :class:`RAFTFlow`, frozen) or no flow,
  instead of FlowNet2, whose CUDA ops no longer build.
* ``"instances"`` are the tracked panoptic detections (UPSNet's score threshold and NMS, masks
  of their mask logits > 0, ``pred_track_ids``), not the stock Mask R-CNN detections.
* Track ids count from 1 and are the thing segment ids of ``panoptic_seg``; stuff segment ids
  are ``STUFF_SEGMENT_ID_BASE + category id``, the same in every frame (the original colours
  stuff by class).
* The video boundary is explicit (a new ``video_id``, :meth:`VPSNet.reset`,
  :meth:`VPSNet.init_video_state`), not Cityscapes-VPS's frame numbering.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import ImageList, Instances
from torch import nn

from d2ext.layers.mask_ops import paste_mask_values
from d2ext.modeling.common.flow import RAFTFlow
from d2ext.modeling.common.tracking import Tracker
from d2ext.modeling.upsnet.meta_arch import UPSNet
from d2ext.modeling.upsnet.panoptic_head import box_regions

from .fuse import VPSNetFuse
from .track_head import TrackHead, TrackMemory, track_targets

__all__ = ["STUFF_SEGMENT_ID_BASE", "VPSNet", "VPSNetVideoState"]

# stuff segment ids of the output are this + the contiguous category id: above every track id,
# below 2^24 (panoptic PNGs), and clear of the ids 2^24 - 1 - category that VPQEvaluator gives
STUFF_SEGMENT_ID_BASE = 1 << 23


@dataclass
class VPSNetVideoState:
    """What a frame leaves for the next ones of its video.

    Attributes:
        memory: the video's objects (:class:`TrackMemory`, or a mask-IoU :class:`Tracker`
            with TRACK_ON False).
        frame_index: frames of the video seen so far.
        video_id, frame_idx: those of the last frame's input dict (None where it had none).
        image_size: (H, W) of the video's input images.
        image: the last frame's padded image (1, 3, H', W') float, the flow net's reference.
        features: the last frame's own (unfused) FPN features, the Fuse module's reference.
    """

    memory: Union[TrackMemory, Tracker]
    frame_index: int = 0
    video_id: Any = None
    frame_idx: Optional[int] = None
    image_size: Optional[Tuple[int, int]] = None
    image: Optional[torch.Tensor] = None
    features: Optional[Dict[str, torch.Tensor]] = None


@META_ARCH_REGISTRY.register()
class VPSNet(UPSNet):
    """
    Training inputs (:class:`d2ext.data.mappers.VPSNetPairMapper`): UPSNet's dict ("image",
    "instances" with ``gt_track_ids`` (K,) int64, "sem_seg") plus "reference": the same for the
    reference frame (same size, same augmentation). Losses: UPSNet's on the fused target frame
    and ``loss_match`` (TRACK_ON).

    Inference outputs per frame: "panoptic_seg" (D2 format; thing segment ids are the track ids,
    stable over the video), "instances" (the panoptic detections at the frame's size:
    pred_boxes, scores, pred_classes, pred_masks, ``pred_track_ids`` (N,) int64 >= 1) and
    "sem_seg" as UPSNet. Each frame's reference is the previous frame of its video, the first
    frame its own. Videos:

    * :meth:`init_video_state` / :meth:`forward_video` (the protocol of
      :class:`d2ext.engine.VideoPredictor` and :class:`d2ext.engine.VideoClipModel`): the state is
      the caller's;
    * plain ``forward`` (D2's ``inference_on_dataset``, e.g. VPQ on a per-frame video dataset):
      the model keeps one video state; an input whose ``video_id`` differs from the last one's,
      whose ``frame_idx`` does not follow it, or whose size differs starts a new video, and
      inputs without ``video_id`` continue the current video until :meth:`reset`.
    """

    @configurable
    def __init__(
        self,
        *,
        fuse: Optional[VPSNetFuse],
        flow_net: Optional[nn.Module],
        track_head: Optional[TrackHead],
        **kwargs,
    ):
        """
        Args:
            fuse: the Fuse module, None for "VPSNet without fuse".
            flow_net: image flow ``flow_net(target, reference) -> (N, 2, H, W)`` pixels (as
                :class:`RAFTFlow`), frozen and kept in eval mode; None is zero flow.
            track_head: the track head, None to link detections by mask IoU (:class:`Tracker`).
            kwargs: :class:`UPSNet`'s arguments.
        """
        super().__init__(**kwargs)
        self.fuse = fuse
        self.flow_net = flow_net if fuse is not None else None
        if self.flow_net is not None:
            self.flow_net.requires_grad_(False)
            self.flow_net.eval()
        self.track_head = track_head
        self.reset()

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        v = cfg.MODEL.VPSNET
        shapes = ret["backbone"].output_shape()
        ret["fuse"] = VPSNetFuse(cfg, shapes) if v.FUSE_ON else None
        ret["flow_net"] = None
        if v.FUSE_ON and v.FLOW_NET == "raft":
            ret["flow_net"] = RAFTFlow(
                input_format=cfg.INPUT.FORMAT,
                num_flow_updates=v.FLOW_NUM_UPDATES,
                weights=v.FLOW_WEIGHTS,
            )
        elif v.FLOW_NET not in ("raft", "zero"):
            raise ValueError(f"MODEL.VPSNET.FLOW_NET must be 'raft' or 'zero', got {v.FLOW_NET!r}")
        ret["track_head"] = None
        if v.TRACK_ON:
            res = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
            channels = shapes[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels
            ret["track_head"] = TrackHead(cfg, ShapeSpec(channels=channels, height=res, width=res))
        return ret

    def train(self, mode: bool = True):
        super().train(mode)
        if self.flow_net is not None:
            self.flow_net.eval()  # frozen, as the original's pre-trained FlowNet2
        return self

    # ---- shared steps ----

    def _raw_images(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """The images before normalisation, padded as ``preprocess_image`` pads: the flow input."""
        return ImageList.from_tensors(
            [x["image"].to(self.device).float() for x in batched_inputs],
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        ).tensor

    def _fused(self, features, ref_features, raw, ref_raw) -> Dict[str, torch.Tensor]:
        if self.fuse is None:
            return features
        if self.flow_net is None:
            flow = raw.new_zeros((raw.shape[0], 2, *raw.shape[-2:]))
        else:
            with torch.no_grad():
                flow = self.flow_net(raw, ref_raw)  # target -> reference, as the fuse wants
        return self.fuse(features, ref_features, flow)

    # ---- training ----

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        references = self._check_train_inputs(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        ref_images = self.preprocess_image(references)
        raw_features = self.backbone(images.tensor)
        ref_features = self.backbone(ref_images.tensor)
        features = raw_features
        if self.fuse is not None:
            features = self._fused(
                raw_features,
                ref_features,
                self._raw_images(batched_inputs),
                self._raw_images(references),
            )
        losses, sampled = self.losses_from_features(batched_inputs, images, features)
        if self.track_head is not None:
            ref_instances = [x["instances"].to(self.device) for x in references]
            losses.update(self._track_losses(features, ref_features, sampled, ref_instances))
        return losses

    def _check_train_inputs(self, batched_inputs: List[Dict]) -> List[Dict]:
        references = []
        for x in batched_inputs:
            name = x.get("file_name", "")
            for key in ("instances", "sem_seg", "reference"):
                if key not in x:
                    raise KeyError(
                        f"VPSNet training input {name!r} has no {key!r}; use "
                        "INPUT.DATASET_MAPPER_NAME 'VPSNetPairMapper'"
                    )
            ref = x["reference"]
            if "image" not in ref or "instances" not in ref:
                raise KeyError(
                    f"VPSNet training input {name!r}: its reference needs image, instances"
                )
            if ref["image"].shape != x["image"].shape:
                raise ValueError(
                    f"VPSNet training input {name!r}: reference image {tuple(ref['image'].shape)} "
                    f"and target {tuple(x['image'].shape)} differ in size"
                )
            if self.track_head is not None:
                for which, inst in (("target", x["instances"]), ("reference", ref["instances"])):
                    if len(inst) and not inst.has("gt_track_ids"):
                        raise KeyError(
                            f"VPSNet training input {name!r}: {which} has no gt_track_ids"
                        )
            references.append(ref)
        return references

    def _track_losses(self, features, ref_features, sampled, ref_instances):
        """The target frame's sampled RoIs (fused features) against the reference frame's GT
        boxes (its own features): match targets from the track ids, background unweighted."""
        rh = self.roi_heads
        feats = rh.box_pooler(
            [features[f] for f in rh.box_in_features], [p.proposal_boxes for p in sampled]
        )
        ref_feats = rh.box_pooler(
            [ref_features[f] for f in rh.box_in_features], [r.gt_boxes for r in ref_instances]
        )
        logits = self.track_head(
            feats, ref_feats, [len(p) for p in sampled], [len(r) for r in ref_instances]
        )
        targets, weights = [], []
        for p, r in zip(sampled, ref_instances):
            # proposals carry their matched GT's fields only when the image has GT objects
            ids = p.gt_track_ids if p.has("gt_track_ids") else p.gt_classes.new_zeros(len(p))
            ref_ids = r.gt_track_ids if len(r) else ids.new_zeros(0)
            t, w = track_targets(ids, p.gt_classes < rh.num_classes, ref_ids)
            targets.append(t)
            weights.append(w)
        return self.track_head.losses(logits, targets, weights)

    # ---- video inference ----

    def reset(self) -> None:
        """Start a new video for plain ``forward`` inference (no objects, no reference)."""
        self._video_state: Optional[VPSNetVideoState] = None

    def init_video_state(self) -> VPSNetVideoState:
        """The state before a video's first frame."""
        memory = self.track_head.new_memory() if self.track_head is not None else Tracker()
        return VPSNetVideoState(memory=memory)

    def forward_video(
        self, batched_inputs: List[Dict], state: VPSNetVideoState
    ) -> Tuple[List[Dict], VPSNetVideoState]:
        """Consecutive frames of one video (D2 input dicts) -> (one output dict per frame, the
        state after them). A frame of another size than the video's is a ``ValueError``."""
        if self.training:
            raise ValueError("VPSNet.forward_video is inference only; call model.eval() first")
        if not isinstance(state, VPSNetVideoState):
            raise TypeError(
                "VPSNet.forward_video: state must come from init_video_state() or the last "
                f"forward_video call, got {type(state).__name__}"
            )
        outputs = [self._video_frame(x, state) for x in batched_inputs]
        return outputs, state

    def inference(
        self,
        batched_inputs: List[Dict],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        """Each input as the next frame of the model's own video state (class docstring)."""
        if detected_instances is not None or not do_postprocess:
            raise NotImplementedError("VPSNet inference with given detections or no postprocess")
        outputs = []
        for x in batched_inputs:
            s = self._video_state
            frame_idx = x.get("frame_idx")
            if (
                s is None
                or x.get("video_id") != s.video_id
                or (frame_idx is not None and s.frame_idx is not None and frame_idx <= s.frame_idx)
                or tuple(x["image"].shape[-2:]) != s.image_size
            ):
                s = self._video_state = self.init_video_state()
            outputs.append(self._video_frame(x, s))
        return outputs

    def _video_frame(self, x: Dict, state: VPSNetVideoState) -> Dict:
        """One frame: fuse with the previous frame (the first with itself), UPSNet's heads,
        track ids for the panoptic detections; updates ``state`` in place."""
        size = tuple(x["image"].shape[-2:])
        if state.image_size is not None and size != state.image_size:
            raise ValueError(
                f"VPSNet: frame {state.frame_index} of the video is {size[0]}x{size[1]} but its "
                f"frames so far are {state.image_size[0]}x{state.image_size[1]}; start a new "
                "video (init_video_state() / reset())"
            )
        images = self.preprocess_image([x])
        raw_features = self.backbone(images.tensor)
        features = raw_features
        if self.fuse is not None:
            raw = self._raw_images([x])
            ref_raw = raw if state.image is None else state.image
            ref_features = raw_features if state.features is None else state.features
            features = self._fused(raw_features, ref_features, raw, ref_raw)
            state.image = raw.detach()
            state.features = {k: v.detach() for k, v in raw_features.items()}
        state.image_size, state.frame_index = size, state.frame_index + 1
        state.video_id, state.frame_idx = x.get("video_id"), x.get("frame_idx")

        _, (det,), sem_logits = self.detect_from_features(images, features, with_stock=False)
        rh, pan = self.roi_heads, self.panoptic_head
        boxes, classes, scores = det.pred_boxes, det.pred_classes, det.scores
        if self.track_head is not None:
            # the original matches the RoI features of the fused target frame; ids from 1
            emb = self.track_head.embed(
                rh.box_pooler([features[f] for f in rh.box_in_features], [boxes])
            )
            det.pred_track_ids = state.memory.update(emb, boxes, classes, scores) + 1

        image_size = images.image_sizes[0]
        height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
        stride = images.tensor.shape[-1] // sem_logits.shape[-1]
        sem = F.interpolate(sem_logits, scale_factor=stride, mode="bilinear", align_corners=False)
        sem = sem_seg_postprocess(sem[0], image_size, height, width)
        det = detector_postprocess(det, height, width)
        mask_logits = det.pred_mask_logits
        box_tensor = det.pred_boxes.tensor
        masks = paste_mask_values(mask_logits, box_tensor, (height, width)) > 0
        det.pred_masks = masks & box_regions(box_tensor, height, width)
        panoptic, segments = pan.inference(
            sem, box_tensor, det.scores, det.pred_classes, mask_logits
        )
        det.remove("pred_mask_logits")
        if self.track_head is None:
            det.pred_track_ids = state.memory.update(det).pred_track_ids + 1
        panoptic, segments = self._segments_by_track(panoptic, segments, det.pred_track_ids)
        if self.sem_seg_order is not None:
            sem = sem[self.sem_seg_order.to(sem.device)]
        return {"sem_seg": sem, "instances": det, "panoptic_seg": (panoptic, segments)}

    @staticmethod
    def _segments_by_track(
        panoptic: torch.Tensor, segments: List[Dict], track_ids: torch.Tensor
    ) -> Tuple[torch.Tensor, List[Dict]]:
        """UPSNet's per-frame segment ids -> a thing's track id, stuff's
        ``STUFF_SEGMENT_ID_BASE + category_id``."""
        out = torch.zeros_like(panoptic)
        relabelled = []
        for s in segments:
            if s["isthing"]:
                new_id = int(track_ids[s["instance_id"]])
            else:
                new_id = STUFF_SEGMENT_ID_BASE + int(s["category_id"])
            out[panoptic == s["id"]] = new_id
            relabelled.append({**s, "id": new_id})
        return out, relabelled
