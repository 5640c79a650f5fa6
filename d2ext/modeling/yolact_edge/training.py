"""YolactEdge's training stages (``MODEL.YOLACT_EDGE.TRAIN_STAGE``): which parameters each one
trains and the losses of the temporal ones. :meth:`YolactEdge.forward` dispatches here in training
mode; ``"image"`` is YOLACT's own forward.

The original's recipe (haotian-liu/yolact_edge @ 873fceb, README "Training on video dataset"):
the image model (``yolact_edge_youtubevis_config``), then the flow net alone on FlyingChairs
(``yolact_edge_vid_trainflow_config``: ``train_flow``, EPE, only ``flow_net*`` train), then the
video stage (``yolact_edge_vid_config``), which here is ``"joint"``. ``"flow_gt"`` is that flow
stage on our exact synthetic flow, and ``"flow"`` trains the flow net and SPA with the
feature-matching loss alone (the backbone and heads frozen), a d2ext stage between the two.

Every trainable parameter of a stage gets a gradient from its losses (what they cannot reach is
frozen): D2's DDP wraps the model with ``find_unused_parameters=False``.
"""

import re
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import torch

from d2ext.modeling.common import (
    feature_matching_loss,
    multiscale_endpoint_error,
    pixel_flow_to_normalized,
)

if TYPE_CHECKING:
    from .meta_arch import YolactEdge

__all__ = [
    "STAGE_LOSSES",
    "TRAIN_STAGES",
    "feature_matching_losses",
    "flow_gt_losses",
    "joint_losses",
    "pair_inputs",
    "trains_parameter",
]

TRAIN_STAGES = ("image", "flow_gt", "flow", "joint")

# the flow net's C3-size level: the P4/P5 warp never reads it (the original computes it anyway)
_FLOW_FINEST = ("flow_net.pred1.", "flow_net.upfeat2.", "flow_net.upflow2.")
_FLOW_FEATURE_HEADS = re.compile(r"flow_net\.pred\d\.(scale|bias)\.")
# the original's video stage trains its fine_tune_layers "flow_net, flow_net_pre_convs, spa,
# fpn_phase_2, proto_net, prediction_layers, semantic_seg_conv": everything but the ResNet and
# FPN phase 1 (the lateral 1x1 convs), whose outputs are also the feature-matching targets
_FROZEN_IN_JOINT = ("backbone.bottom_up.", "backbone.fpn_lateral")


def trains_parameter(stage: str, name: str, *, flow_scale_bias: bool = True) -> bool:
    """Whether parameter ``name`` (of :class:`YolactEdge`) trains in ``stage``.

    * ``"image"``: YOLACT; the flow net and SPA are unused.
    * ``"flow_gt"``: the flow net less its scale/bias heads (no flow loss reaches them).
    * ``"flow"``: the flow net and SPA less the flow net's finest level.
    * ``"joint"``: the original video stage's fine-tune layers: the flow net (less its finest
      level), SPA, the FPN output and P6/P7 convs, the protonet, the head and the semantic
      segmentation conv; the ResNet and the FPN laterals are frozen.

    With ``flow_scale_bias`` False the flow net's scale/bias heads are never used: frozen.
    """
    if stage not in TRAIN_STAGES:
        raise ValueError(f"unknown YolactEdge TRAIN_STAGE {stage!r}; one of {TRAIN_STAGES}")
    if stage == "image":
        return not name.startswith(("flow_net.", "spa."))
    if _FLOW_FEATURE_HEADS.match(name) and (stage == "flow_gt" or not flow_scale_bias):
        return False
    if stage == "flow_gt":
        return name.startswith("flow_net.")
    if name.startswith(_FLOW_FINEST):
        return False
    if stage == "flow":
        return name.startswith(("flow_net.", "spa."))
    return not name.startswith(_FROZEN_IN_JOINT)


def pair_inputs(
    model: "YolactEdge", batched_inputs: List[Dict], keys: Sequence[str]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalised (N, 3, S, S) current frames and key (reference) frames of a batch of frame
    pairs; a clear error for an input without the ``keys`` the stage reads."""
    for i, x in enumerate(batched_inputs):
        missing = [k for k in keys if k not in x]
        if missing:
            raise ValueError(
                f"YolactEdge TRAIN_STAGE {model.train_stage!r}: input "
                f"{x.get('file_name', f'batched_inputs[{i}]')} has no {missing} (frame pairs "
                "come from YolactEdgePairMapper, MODEL.YOLACT_EDGE.FRAME_OFFSETS)"
            )
    references = [{"image": x["reference_image"]} for x in batched_inputs]
    return model.preprocess_image(batched_inputs), model.preprocess_image(references)


def _matching_loss(
    model: "YolactEdge", pred: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor]
) -> torch.Tensor:
    """The original's ``extra_loss`` ``W``: cosine at "L+P" (features, and after the output
    convs with their weights detached) on the warped levels."""
    names = model.warp_feature_names
    # parity quirk: the original indexes its reversed pred_layers with level + 1, so P4 goes
    # through P4's output conv but P5 through P3's
    convs = [model.backbone.fpn_output4, model.backbone.fpn_output3]
    return feature_matching_loss(
        [pred[n] for n in names],
        [target[n] for n in names],
        kind="cosine",
        location="L+P",
        output_convs=convs,
        weight=model.loss_fm_weight,
    )


def feature_matching_losses(model: "YolactEdge", batched_inputs: List[Dict]) -> Dict:
    """``"flow"``: ``{"loss_fm": ...}`` between the non-keyframe path's P4/P5 (keyframe =
    ``reference_image``; warped, scaled, SPA) and the current frame's own full-pass sums."""
    images, references = pair_inputs(model, batched_inputs, ["reference_image"])
    with torch.no_grad():  # frozen: the original detaches both laterals and the targets
        key_sums, key_lateral = model.fpn_phase1(model.backbone.bottom_up(references))
        target, lateral = model.fpn_phase1(model.backbone.bottom_up(images))
    pred = model.nonkey_phase1(lateral, model.warp_keyframe(lateral, key_lateral, key_sums))
    return {"loss_fm": _matching_loss(model, pred, target)}


def flow_gt_losses(model: "YolactEdge", batched_inputs: List[Dict]) -> Dict:
    """``"flow_gt"``: ``{"loss_flow": ...}``, the original's flow stage (``train_flow``,
    ``OpticalFlowLoss``): the end-point error of the flow net's three levels (on the C3 laterals
    of the two frames) against each input's ``"flow"``, (2, h, w) pixels from the current frame
    to ``reference_image`` (the pair mapper's, at frame offset -1), in normalised units.

    An input at ``frame_offset`` 0 without ``"flow"`` is a frame paired with itself (the pair
    mapper's clamp for a video's last frame, which has no next frame): its flow is exactly
    zero."""
    images, references = pair_inputs(model, batched_inputs, ["reference_image"])
    gt = []
    for i, x in enumerate(batched_inputs):
        if "flow" in x:
            gt.append(x["flow"].to(model.device, torch.float32))
        elif x.get("frame_offset") == 0:
            gt.append(torch.zeros((2,) + tuple(x["image"].shape[-2:]), device=model.device))
        else:
            raise ValueError(
                f"YolactEdge TRAIN_STAGE 'flow_gt': input "
                f"{x.get('file_name', f'batched_inputs[{i}]')} has no ['flow'] (the pair "
                "mapper gives it at MODEL.YOLACT_EDGE.FRAME_OFFSETS [-1] on data with flow files)"
            )
    with torch.no_grad():
        lateral = model.lateral_c3(model.bottom_up_to_c3(images))
        key_lateral = model.lateral_c3(model.bottom_up_to_c3(references))
    # normalised units do not depend on the image size, so the S x S stretch leaves them
    gt = pixel_flow_to_normalized(torch.stack(gt), flow_scale=model.warp_flow_scale)
    flows = model.flow_net(lateral, key_lateral).flows
    return {"loss_flow": multiscale_endpoint_error(flows, gt)}


def _detection_losses(
    model: "YolactEdge", targets: List[Dict], features: Dict[str, torch.Tensor], image_size
) -> Dict[str, torch.Tensor]:
    """YOLACT's losses (those of ``YOLACT.forward``) on FPN outputs ``p3..p7``."""
    features, *outputs = model.forward_from_features(features, image_size)
    return model.losses(targets, features, *outputs)


def joint_losses(model: "YolactEdge", batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
    """``"joint"``, the original's video stage (``train.py`` with ``yolact_edge_vid_config``) on
    frame pairs (current frame with its ground truth, ``reference_image`` its keyframe 2-5
    frames back):

    * the keyframe: ResNet + FPN phase 1 only, no gradient (its P4/P5 sums and C3 lateral);
    * ``"compute"``: the current frame's full pass, YOLACT's losses (``loss_box``, ...;
      ``flow.base_backward``);
    * ``"warp"``: the current frame's non-keyframe pass (its C3 lateral, the keyframe's P4/P5
      warped, scaled, SPA), YOLACT's losses on its predictions against the same ground truth
      (``loss_box_warp``, ...) plus the feature-matching loss ``loss_fm`` against the full
      pass's P4/P5 sums.

    The original steps its optimizer after each pass (``backward_and_log`` zeroes the
    gradients, backpropagates that pass's losses, steps); D2 takes one step on the sum of one
    loss dict. The sum has the gradient of the two steps added, with two differences: the warp
    pass's gradient is taken at the weights before, not after, the compute pass's update, and
    weight decay and momentum advance once per iteration instead of once per pass (at SGD's
    steady state the displacement per iteration is the same to first order).

    Not reproduced: the original's ``dataset.joint = 'coco'`` adds a third step per iteration,
    YOLACT's losses on a batch of COCO images mapped to the YouTube-VIS classes; D2's single
    train loader gives the model the video pairs only.

    The ResNet and FPN phase 1 are frozen (in eval mode), so the current frame's C3 lateral and
    phase-1 sums are computed once and shared by both passes (the original recomputes the
    lateral with its partial backbone: the same values).
    """
    images, references = pair_inputs(model, batched_inputs, ["reference_image"])
    with torch.no_grad():  # the frozen part: the original detaches its outputs
        key_sums, key_lateral = model.fpn_phase1(model.backbone.bottom_up(references))
        sums, lateral = model.fpn_phase1(model.backbone.bottom_up(images))
    targets = model.prepare_targets(batched_inputs)
    size = images.shape[-2:]
    losses = _detection_losses(model, targets, model.fpn_phase2(sums), size)
    warped = model.nonkey_phase1(lateral, model.warp_keyframe(lateral, key_lateral, key_sums))
    warp_losses = _detection_losses(model, targets, model.fpn_phase2(warped), size)
    losses.update({f"{k}_warp": v for k, v in warp_losses.items()})
    losses["loss_fm"] = _matching_loss(model, warped, sums)
    return losses


STAGE_LOSSES = {
    "flow_gt": flow_gt_losses,
    "flow": feature_matching_losses,
    "joint": joint_losses,
}
