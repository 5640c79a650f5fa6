"""YolactEdge meta-architecture (Liu et al., "YolactEdge: Real-time Instance Segmentation on the
Edge", ICRA 2021): YOLACT that, on a video, computes the deep features only every
``KEYFRAME_INTERVAL`` frames and carries them to the frames between with a predicted flow.

* Keyframe: the full YOLACT. Its FPN top-down sums *before* the 3x3 output convs ("phase 1") of
  P4 and P5, and its C3 lateral, are kept in the video state.
* Non-keyframe: the ResNet up to C3 only (res4/res5 are never run), its C3 lateral,
  :class:`FlowNetMini` (current lateral, keyframe lateral) -> flows at P4/P5 size, the kept
  P4/P5 warped (``warp_features`` in the original's normalised, ``/ 8`` convention) then
  ``* scale + bias``, P3 = the warped P4 resized (bilinear, ``align_corners=False``) to C3 size
  + the current lateral, optional :class:`SPA` on P4/P5, then YOLACT-FPN's output convs (+ReLU),
  the P6/P7 convs, the protonet, the head and YOLACT's inference as usual.

Video protocol (:class:`d2ext.engine.VideoPredictor`): ``init_video_state`` / ``forward_video``.
Plain ``forward`` is per-image YOLACT (every image a keyframe): D2's evaluators work unchanged.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from d2ext.modeling.common import FlowNetMini, warp_features
from d2ext.modeling.yolact import YOLACT, YOLACTFPN

from .spa import SPA
from .training import STAGE_LOSSES, TRAIN_STAGES, trains_parameter

__all__ = ["KeyframeFeatures", "YolactEdge", "YolactEdgeVideoState"]


@dataclasses.dataclass(frozen=True)
class KeyframeFeatures:
    """What a keyframe leaves for the frames after it.

    Attributes:
        lateral: (1, C, H3, W3) its C3 lateral (1x1 conv output, with bias).
        features: ``{"p4": (1, C, H4, W4), "p5": ...}`` its FPN top-down sums before the
            output convs.
        image_size: (H, W) of its input image (``batched_inputs[i]["image"]``).
    """

    lateral: torch.Tensor
    features: Dict[str, torch.Tensor]
    image_size: Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class YolactEdgeVideoState:
    """Per-video state threaded through :meth:`YolactEdge.forward_video`.

    Attributes:
        frame_index: frames of the video seen so far (the next frame's index).
        keyframe_index: index of the last keyframe (-1 before the first).
        keyframe: its features, None before the first frame.
    """

    frame_index: int = 0
    keyframe_index: int = -1
    keyframe: Optional[KeyframeFeatures] = None


@META_ARCH_REGISTRY.register()
class YolactEdge(YOLACT):
    """YOLACT + keyframe feature transfer. Inputs and outputs as :class:`YOLACT`; outputs of
    :meth:`forward_video` also carry ``"is_keyframe"`` (bool) per frame.

    Training (``train_stage``, :mod:`.training`; parameters a stage does not train are frozen,
    modules with no trainable parameter in eval mode): ``"image"``: YOLACT's losses on single
    images; ``"flow_gt"``: the flow net alone on ground-truth flow; ``"flow"``: the flow net and
    SPA with the feature-matching loss; ``"joint"``: the original's video stage, YOLACT's losses
    on the full and the non-keyframe pass plus feature matching, the ResNet and FPN laterals
    frozen. The temporal stages read frame pairs: each input carries ``"reference_image"``, its
    keyframe (C, H, W) in ``input_format`` (and ``"flow"`` for "flow_gt").
    """

    @configurable
    def __init__(
        self,
        *,
        flow_net: FlowNetMini,
        spa: Optional[SPA] = None,
        keyframe_interval: int = 5,
        warp_feature_names: Sequence[str] = ("p4", "p5"),
        warp_flow_scale: float = 0.125,
        flow_scale_bias: bool = True,
        train_stage: str = "image",
        loss_fm_weight: float = 1.0,
        **kwargs,
    ):
        """
        Args:
            flow_net: flow between C3 laterals (``MODEL.YOLACT_EDGE.FLOW_*``).
            spa: refinement of the warped levels (``MODEL.YOLACT_EDGE.USE_SPA``), or None.
            keyframe_interval: k, a keyframe every k frames
                (``MODEL.YOLACT_EDGE.KEYFRAME_INTERVAL``).
            warp_feature_names: levels warped from the keyframe
                (``MODEL.YOLACT_EDGE.WARP_FEATURES``); only ``["p4", "p5"]``.
            warp_flow_scale: ``warp_features``' ``flow_scale``
                (``MODEL.YOLACT_EDGE.WARP_FLOW_SCALE``).
            flow_scale_bias: apply the flow net's ``* scale + bias`` to the warped features
                (``MODEL.YOLACT_EDGE.FLOW_SCALE_BIAS``).
            train_stage: "image", "flow_gt", "flow" or "joint"
                (``MODEL.YOLACT_EDGE.TRAIN_STAGE``).
            loss_fm_weight: feature-matching loss weight (``MODEL.YOLACT_EDGE.LOSS_FM_WEIGHT``).
            kwargs: :class:`YOLACT`'s arguments.
        """
        super().__init__(**kwargs)
        if list(warp_feature_names) != ["p4", "p5"]:
            raise ValueError(
                "YolactEdge: MODEL.YOLACT_EDGE.WARP_FEATURES must be ['p4', 'p5'] (the "
                "original's warp_layers 'P4P5': P3 is rebuilt from the warped P4 and the current "
                f"C3 lateral); got {list(warp_feature_names)}"
            )
        if keyframe_interval < 1:
            raise ValueError(
                "YolactEdge: MODEL.YOLACT_EDGE.KEYFRAME_INTERVAL must be >= 1, got "
                f"{keyframe_interval}"
            )
        if train_stage not in TRAIN_STAGES:
            raise ValueError(
                f"YolactEdge: MODEL.YOLACT_EDGE.TRAIN_STAGE must be one of {TRAIN_STAGES}, "
                f"got {train_stage!r}"
            )
        fpn = self.backbone
        if not isinstance(fpn, YOLACTFPN):
            raise ValueError(
                "YolactEdge needs the YOLACT-FPN backbone (MODEL.BACKBONE.NAME "
                f"build_yolact_resnet_fpn_backbone), got {type(fpn).__name__}"
            )
        bottom_up = fpn.bottom_up
        if not all(hasattr(bottom_up, a) for a in ("stem", "stages", "stage_names")):
            raise ValueError(
                "YolactEdge runs the bottom-up network stage by stage (non-keyframes stop at C3): "
                f"it needs a D2 ResNet (stem, stages, stage_names), got {type(bottom_up).__name__}"
            )
        levels = list(fpn.output_shape())
        self._fpn_inputs = levels[: len(fpn.in_features)]  # p3, p4, p5
        self._fpn_extra = levels[len(fpn.in_features) :]  # p6, p7
        if self._fpn_inputs != ["p3", "p4", "p5"]:
            raise ValueError(
                "YolactEdge: MODEL.YOLACT.FPN_IN_FEATURES must give the FPN inputs P3, P4, P5 "
                f"(C3-C5) to warp P4/P5 and rebuild P3; got {self._fpn_inputs}"
            )
        self._c3 = fpn.in_features[0]
        if self._c3 not in bottom_up.stage_names:
            raise ValueError(f"YolactEdge: {self._c3!r} is not a stage of the ResNet")
        if flow_net.in_channels != fpn.output_shape()["p3"].channels:
            raise ValueError(
                f"YolactEdge: the flow net reads {flow_net.in_channels}-channel laterals, the FPN "
                f"is {fpn.output_shape()['p3'].channels} wide (MODEL.YOLACT.FPN_OUT_CHANNELS)"
            )
        self.flow_net = flow_net
        self.spa = spa
        self.keyframe_interval = keyframe_interval
        self.warp_feature_names = list(warp_feature_names)
        self.warp_flow_scale = warp_flow_scale
        self.flow_scale_bias = flow_scale_bias
        self.train_stage = train_stage
        self.loss_fm_weight = loss_fm_weight
        # Parameters the stage's losses do not reach are frozen (D2's DDP wraps the model with
        # find_unused_parameters=False: every trainable parameter must get a gradient).
        for name, p in self.named_parameters():
            if not self._trains(name):
                p.requires_grad_(False)

    def _trains(self, name: str) -> bool:
        """Whether parameter ``name`` trains in ``train_stage`` (:func:`trains_parameter`)."""
        return trains_parameter(self.train_stage, name, flow_scale_bias=self.flow_scale_bias)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        e = cfg.MODEL.YOLACT_EDGE
        if e.FLOW_NET != "mini":
            raise ValueError(
                "MODEL.YOLACT_EDGE.FLOW_NET: only 'mini' (FlowNetMini) is supported, got "
                f"{e.FLOW_NET!r}"
            )
        ret.update(
            {
                "flow_net": FlowNetMini(cfg),
                "spa": SPA(channels=cfg.MODEL.YOLACT.FPN_OUT_CHANNELS, levels=e.WARP_FEATURES)
                if e.USE_SPA
                else None,
                "keyframe_interval": e.KEYFRAME_INTERVAL,
                "warp_feature_names": list(e.WARP_FEATURES),
                "warp_flow_scale": e.WARP_FLOW_SCALE,
                "flow_scale_bias": e.FLOW_SCALE_BIAS,
                "train_stage": e.TRAIN_STAGE,
                "loss_fm_weight": e.LOSS_FM_WEIGHT,
            }
        )
        return ret

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:  # frozen parts keep their statistics (the original's fine_tune_layers)
            for name, module in self.named_modules():
                names = [f"{name}.{p}" for p, _ in module.named_parameters()]
                if name and names and not any(self._trains(n) for n in names):
                    module.train(False)
        return self

    # ---- the two FPN phases and the non-keyframe path (YOLACT-FPN's own layers) ----

    def fpn_phase1(
        self, bottom_up_features: Dict[str, torch.Tensor]
    ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """Top-down sums before the output convs, ``{"p3", "p4", "p5"}``, and the C3 lateral;
        the same operations in the same order as ``YOLACTFPN.forward_features``."""
        fpn = self.backbone
        feats = [bottom_up_features[f] for f in fpn.in_features]
        sums: List[Optional[torch.Tensor]] = [None] * len(feats)
        top = lateral_c3 = None
        for i in range(len(feats) - 1, -1, -1):
            lat = getattr(fpn, f"fpn_lateral{self._fpn_inputs[i][1:]}")(feats[i])
            if i == 0:
                lateral_c3 = lat
            if top is not None:
                lat = lat + F.interpolate(
                    top, size=lat.shape[-2:], mode="bilinear", align_corners=False
                )
            sums[i] = top = lat
        return dict(zip(self._fpn_inputs, sums)), lateral_c3

    def fpn_phase2(self, sums: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Output convs (+ ReLU) on P3-P5, then the stride-2 convs for P6, P7: ``p3..p7``."""
        fpn = self.backbone
        outs = {}
        for name in self._fpn_inputs:
            x = getattr(fpn, f"fpn_output{name[1:]}")(sums[name])
            outs[name] = F.relu(x) if fpn.relu_outputs else x
        last = outs[self._fpn_inputs[-1]]
        for name in self._fpn_extra:
            outs[name] = last = getattr(fpn, f"fpn_downsample{name[1:]}")(last)
        return outs

    def bottom_up_to_c3(self, images: torch.Tensor) -> torch.Tensor:
        """The ResNet stem and stages up to C3 only (the later stages are not run)."""
        bottom_up = self.backbone.bottom_up
        x = bottom_up.stem(images)
        for name, stage in zip(bottom_up.stage_names, bottom_up.stages):
            x = stage(x)
            if name == self._c3:
                return x
        raise AssertionError("unreachable: C3 is checked to be a stage in __init__")

    def lateral_c3(self, c3: torch.Tensor) -> torch.Tensor:
        return getattr(self.backbone, f"fpn_lateral{self._fpn_inputs[0][1:]}")(c3)

    def warp_keyframe(
        self, lateral: torch.Tensor, keyframe_lateral: torch.Tensor, keyframe_features: Dict
    ) -> Dict[str, torch.Tensor]:
        """The keyframe's P4/P5 sums moved onto the current frame: flow from the two C3
        laterals, backward warp, then ``* scale + bias``."""
        flow = self.flow_net(lateral, keyframe_lateral, with_finest=False)
        out = {}
        # FlowNetOutput index 1 is at P4 size, 2 at P5 size
        for index, name in enumerate(self.warp_feature_names, start=1):
            x = warp_features(
                keyframe_features[name],
                flow.flows[index],
                flow_units="normalized",
                flow_scale=self.warp_flow_scale,
                align_corners=True,
                padding_mode="zeros",
            )
            if self.flow_scale_bias:
                x = x * flow.scales[index] + flow.biases[index]
            out[name] = x
        return out

    def nonkey_phase1(
        self, lateral: torch.Tensor, warped: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """Phase-1 sums of a non-keyframe: P3 from the warped P4 (before SPA) + the current
        lateral, P4/P5 the warped ones (SPA-refined when on)."""
        up = F.interpolate(warped["p4"], lateral.shape[-2:], mode="bilinear", align_corners=False)
        out = {"p3": up + lateral}
        out.update(self.spa(lateral, warped) if self.spa is not None else warped)
        return out

    # ---- video inference ----

    def init_video_state(self) -> YolactEdgeVideoState:
        """The state before a video's first frame."""
        return YolactEdgeVideoState()

    def forward_video(
        self, batched_inputs: List[Dict], state: YolactEdgeVideoState
    ) -> Tuple[List[Dict], YolactEdgeVideoState]:
        """Consecutive frames of one video (D2 input dicts) -> (one output dict per frame, the
        state after them).

        A frame is a keyframe when it is the video's first, ``keyframe_interval`` frames after
        the last keyframe, or of another image size than the keyframe: a size change starts a
        new keyframe there (warping features of another frame geometry would be meaningless),
        and the schedule counts on from it.
        """
        if self.training:
            raise ValueError("YolactEdge.forward_video is inference only; call model.eval() first")
        if not isinstance(state, YolactEdgeVideoState):
            raise TypeError(
                "YolactEdge.forward_video: state must come from init_video_state() or the last "
                f"forward_video call, got {type(state).__name__}"
            )
        outputs = []
        for x in batched_inputs:
            output, state = self._video_frame(x, state)
            outputs.append(output)
        return outputs, state

    def _video_frame(self, x: Dict, state: YolactEdgeVideoState):
        images = self.preprocess_image([x])
        image_size = tuple(x["image"].shape[-2:])
        key = state.keyframe
        is_keyframe = (
            key is None
            or state.frame_index - state.keyframe_index >= self.keyframe_interval
            or key.image_size != image_size
        )
        if is_keyframe:
            sums, lateral = self.fpn_phase1(self.backbone.bottom_up(images))
            key = KeyframeFeatures(
                lateral=lateral.detach(),
                features={n: sums[n].detach() for n in self.warp_feature_names},
                image_size=image_size,
            )
            state = YolactEdgeVideoState(state.frame_index + 1, state.frame_index, key)
        else:
            lateral = self.lateral_c3(self.bottom_up_to_c3(images))
            warped = self.warp_keyframe(lateral, key.lateral, key.features)
            sums = self.nonkey_phase1(lateral, warped)
            state = dataclasses.replace(state, frame_index=state.frame_index + 1)
        features = self.fpn_phase2(sums)
        _, protos, deltas, logits, coeffs, anchors = self.forward_from_features(
            features, images.shape[-2:]
        )
        (output,) = self.inference([x], protos, deltas, logits, coeffs, anchors)
        output["is_keyframe"] = is_keyframe
        return output, state

    # ---- training (the stages' losses: training.py) ----

    def forward(self, batched_inputs: List[Dict]):
        if not self.training or self.train_stage == "image":
            return super().forward(batched_inputs)
        return STAGE_LOSSES[self.train_stage](self, batched_inputs)
