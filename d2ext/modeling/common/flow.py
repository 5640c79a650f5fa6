"""Flow estimators for d2ext's video models and the official-weight mapping (the warp and the
temporal losses are in ``warp.py``).

* :class:`FlowNetMini` - YolactEdge's (Liu et al., ICRA 2021) flow net, pre-convs included. It
  reads the C3-lateral maps of the current frame and the keyframe and predicts, at three sizes
  (C3, then two stride-2 steps: P4, P5), a flow in the units of
  ``warp_features(flow_units="normalized", flow_scale=1/8)`` plus a per-channel scale and bias
  for the warped features (``warped * scale + bias``).
* :class:`RAFTFlow` - torchvision's RAFT-small (Teed & Deng, ECCV 2020), trained from scratch
  here, for models that want dense image flow in pixels.
* :func:`convert_official_flow_state_dict` - haotian-liu/yolact_edge keys -> ours.

Parity (haotian-liu/yolact_edge @ 873fceb, ``yolact_edge/yolact.py``): the flow net and warp
reproduce ``../shared/fixtures/yolact_edge`` (tests/modeling/test_flow_parity.py).
"""

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from torch import nn
from torchvision.models.optical_flow import raft_small

__all__ = [
    "FlowNetMini",
    "FlowNetOutput",
    "RAFTFlow",
    "load_flow_weights",
    "convert_official_flow_state_dict",
]


class FlowNetOutput(NamedTuple):
    """Predictions fine to coarse: index 0 at the input (C3) size, 1 and 2 after one and two
    stride-2 steps (P4, P5 sizes: ``ceil(h / 2)``, ``ceil(h / 4)``). ``flows``: (N, 2, h, w)
    normalised flow (x, y; warp with ``flow_scale=1/8``); ``scales`` / ``biases``: (N, C_out,
    h, w). Index 0 is None when the finest level was skipped (``with_finest=False``)."""

    flows: List[Optional[torch.Tensor]]
    scales: List[Optional[torch.Tensor]]
    biases: List[Optional[torch.Tensor]]


def _conv_lrelu(in_channels: int, out_channels: int, stride: int = 1) -> Conv2d:
    return Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=1, activation=nn.LeakyReLU(0.1)
    )


class _FlowPredictor(nn.Module):
    """One level's heads: 3x3 flow conv (no bias), 1x1 scale and 1x1 bias convs."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.flow = nn.Conv2d(in_channels, 2, 3, padding=1, bias=False)
        self.scale = nn.Conv2d(in_channels, out_channels, 1)
        self.bias = nn.Conv2d(in_channels, out_channels, 1)
        for m in (self.flow, self.scale, self.bias):
            nn.init.kaiming_normal_(m.weight, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        # the scale starts around 1 (the original's FlowNetMiniPredLayer init)
        nn.init.ones_(self.scale.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.flow(x), self.scale(x), self.bias(x)


class FlowNetMini(nn.Module):
    """YolactEdge's FlowNetMini with its ``flow_net_pre_convs``.

    ``reduce``: 3x3 conv + LeakyReLU(0.1) per ``reduce_channels`` entry, applied to each frame.
    Encoder on ``cat(current, keyframe)``: three stages of 3x3 conv + LeakyReLU(0.1) with
    ``encode_channels`` x (1, 2, 4) outputs, the last two entered with stride 2
    (``encode_layers`` are the original's per-stage width multipliers of the inner convs).
    Decoder: level 3 predicts from conv3; ``upfeat3``/``upflow3`` are a resize
    (``interpolation_mode``, ``align_corners=False``) to conv2's size then a 3x3 conv (no bias);
    level 2 predicts from ``concat2 = cat(conv2, upfeat3, upflow3)``; ``upfeat2`` resizes the
    whole ``concat2`` (not conv2 alone, as the original) and level 1 predicts from
    ``cat(conv1, upfeat2, upflow2)``.

    Init (the original's, used when its flow stage starts from an image checkpoint): encoder
    kaiming-normal(a=0.1, fan_in), predictors kaiming-normal(fan_in), zero biases except the
    scale convs' (1); pre-convs and up-convs PyTorch's default.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        reduce_channels: Union[int, Sequence[int]] = (64,),
        encode_channels: int = 64,
        encode_layers: Sequence[Sequence[int]] = ((1,), (2,), (4,)),
        interpolation_mode: str = "bilinear",
    ):
        """
        Args:
            in_channels: width of the C3-lateral maps it reads (``MODEL.YOLACT.FPN_OUT_CHANNELS``).
            out_channels: width of the scale/bias maps, i.e. of the warped FPN features
                (``MODEL.YOLACT.FPN_OUT_CHANNELS``).
            reduce_channels: widths of the pre-convs (``MODEL.YOLACT_EDGE.FLOW_REDUCE_CHANNELS``;
                an int is one conv, 0 or ``[]`` none).
            encode_channels: base encoder width (``MODEL.YOLACT_EDGE.FLOW_ENCODE_CHANNELS``).
            encode_layers: the original's ``flow.encode_layers``, one list per stage.
            interpolation_mode: ``F.interpolate`` mode of the up-paths (the original's
                ``fpn.interpolation_mode``).
        """
        super().__init__()
        if isinstance(reduce_channels, int):
            reduce_channels = [reduce_channels] if reduce_channels > 0 else []
        if len(encode_layers) != 3 or any(len(s) == 0 for s in encode_layers):
            raise ValueError(f"encode_layers needs 3 non-empty stages, got {encode_layers}")
        self.in_channels = in_channels
        self.interpolation_mode = interpolation_mode

        reduce, width = [], in_channels
        for c in reduce_channels:
            reduce.append(_conv_lrelu(width, c))
            width = c
        self.reduce = nn.Sequential(*reduce)

        e = encode_channels
        stage_in = (2 * width, e, 2 * e)
        stage_out = (e, 2 * e, 4 * e)
        for s, (cin, cout, mults, stride) in enumerate(
            zip(stage_in, stage_out, encode_layers, (1, 2, 2)), start=1
        ):
            widths = [e * m for m in mults]
            convs = [_conv_lrelu(cin, widths[0], stride)]
            convs += [_conv_lrelu(a, b) for a, b in zip(widths[:-1], widths[1:])]
            convs.append(_conv_lrelu(widths[-1], cout))
            for conv in convs:
                nn.init.kaiming_normal_(conv.weight, a=0.1, mode="fan_in")
                nn.init.zeros_(conv.bias)
            self.add_module(f"conv{s}", nn.Sequential(*convs))

        self.pred3 = _FlowPredictor(4 * e, out_channels)
        self.pred2 = _FlowPredictor(4 * e + 2, out_channels)
        self.pred1 = _FlowPredictor(2 * e + 2, out_channels)
        self.upfeat3 = nn.Conv2d(4 * e, 2 * e, 3, padding=1, bias=False)
        self.upflow3 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.upfeat2 = nn.Conv2d(4 * e + 2, e, 3, padding=1, bias=False)
        self.upflow2 = nn.Conv2d(2, 2, 3, padding=1, bias=False)

    @classmethod
    def from_config(cls, cfg):
        fpn_width = cfg.MODEL.YOLACT.FPN_OUT_CHANNELS
        return {
            "in_channels": fpn_width,
            "out_channels": fpn_width,
            "reduce_channels": cfg.MODEL.YOLACT_EDGE.FLOW_REDUCE_CHANNELS,
            "encode_channels": cfg.MODEL.YOLACT_EDGE.FLOW_ENCODE_CHANNELS,
        }

    def _resize(self, x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode=self.interpolation_mode, align_corners=False)

    def forward(
        self, current: torch.Tensor, keyframe: torch.Tensor, *, with_finest: bool = True
    ) -> FlowNetOutput:
        """
        Args:
            current, keyframe: (N, in_channels, h, w) C3-lateral maps of the two frames.
            with_finest: False skips the C3-size level (YolactEdge warps only P4 and P5; the
                original computes it anyway because its skip flag reads ``self.training`` in
                ``__init__``, where it is always True).
        Returns:
            :class:`FlowNetOutput`; the flow takes each current-frame pixel to where it is in
            the keyframe (``warp_features(keyframe_feature, flow)`` aligns it to the current).
        """
        for name, x in (("current", current), ("keyframe", keyframe)):
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise ValueError(
                    f"FlowNetMini: {name} must be (N, {self.in_channels}, h, w), "
                    f"got {tuple(x.shape)}"
                )
        if current.shape != keyframe.shape:
            raise ValueError(
                f"FlowNetMini: current {tuple(current.shape)} and keyframe "
                f"{tuple(keyframe.shape)} differ in shape"
            )
        return self.predict(self.reduce(current), self.reduce(keyframe), with_finest=with_finest)

    def predict(
        self, current: torch.Tensor, keyframe: torch.Tensor, *, with_finest: bool = True
    ) -> FlowNetOutput:
        """The flow net proper, on already reduced maps (the original's ``flow_net``)."""
        out1 = self.conv1(torch.cat((current, keyframe), dim=1))
        out2 = self.conv2(out1)
        out3 = self.conv3(out2)
        flow3, scale3, bias3 = self.pred3(out3)
        size2 = out2.shape[-2:]
        upfeat3 = self.upfeat3(self._resize(out3, size2))
        upflow3 = self.upflow3(self._resize(flow3, size2))
        concat2 = torch.cat((out2, upfeat3, upflow3), dim=1)
        flow2, scale2, bias2 = self.pred2(concat2)
        flow1 = scale1 = bias1 = None
        if with_finest:
            size1 = out1.shape[-2:]
            upfeat2 = self.upfeat2(self._resize(concat2, size1))
            upflow2 = self.upflow2(self._resize(flow2, size1))
            flow1, scale1, bias1 = self.pred1(torch.cat((out1, upfeat2, upflow2), dim=1))
        return FlowNetOutput([flow1, flow2, flow3], [scale1, scale2, scale3], [bias1, bias2, bias3])


class RAFTFlow(nn.Module):
    """Dense image flow from torchvision's ``raft_small(weights=None)`` (randomly initialised;
    train it, e.g. with ``warp.endpoint_error``, or load torchvision's weights into ``.raft``).

    Images are normalised to [-1, 1] RGB as torchvision's RAFT transforms do, replicate-padded
    to a multiple of 8 (split evenly on both sides, as RAFT's ``InputPadder``) and the flow is
    cropped back. RAFT's 4-level correlation pyramid needs the padded size >= 128.
    """

    @configurable
    def __init__(
        self,
        *,
        input_format: str = "BGR",
        pixel_max: float = 255.0,
        num_flow_updates: int = 12,
        weights: str = "",
    ):
        """
        Args:
            input_format: channel order of the input images (``INPUT.FORMAT``): BGR or RGB.
            pixel_max: value of a white pixel in the inputs (255 for D2's images).
            num_flow_updates: recurrent refinement steps.
            weights: a trained RAFT-small to load (:func:`load_flow_weights`, e.g.
                ``tools/train_flow.py``'s model_final.pth); "" keeps the random init.
        """
        super().__init__()
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"RAFTFlow: input_format must be BGR or RGB, got {input_format!r}")
        self.input_format = input_format
        self.pixel_max = pixel_max
        self.num_flow_updates = num_flow_updates
        self.raft = raft_small(weights=None)
        if weights:
            load_flow_weights(self, weights)

    @classmethod
    def from_config(cls, cfg):
        return {"input_format": cfg.INPUT.FORMAT}

    def forward(
        self, image1: torch.Tensor, image2: torch.Tensor, *, return_all: bool = False
    ) -> Union[torch.Tensor, List[torch.Tensor]]:
        """
        Args:
            image1, image2: (N, 3, H, W) float in [0, pixel_max], ``input_format`` order.
            return_all: return every refinement step's flow (RAFT's sequence loss) instead of
                the last one.
        Returns:
            (N, 2, H, W) flow in pixels from image1 to image2: ``image1[y, x]`` moves to
            ``image2[y + v, x + u]`` (channel 0 = u along W).
        """
        if image1.shape != image2.shape or image1.dim() != 4 or image1.shape[1] != 3:
            raise ValueError(
                f"RAFTFlow wants two (N, 3, H, W) images of one shape, got "
                f"{tuple(image1.shape)} and {tuple(image2.shape)}"
            )
        h, w = image1.shape[-2:]
        ph, pw = -h % 8, -w % 8
        if h + ph < 128 or w + pw < 128:
            raise ValueError(
                f"RAFTFlow: images of {h}x{w} are too small; RAFT's correlation pyramid needs "
                "H and W >= 128 (after padding to a multiple of 8)"
            )
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        images = []
        for im in (image1, image2):
            im = im.float() * (2.0 / self.pixel_max) - 1.0
            if self.input_format == "BGR":
                im = im.flip(1)
            images.append(F.pad(im, pad, mode="replicate") if ph or pw else im)
        flows = self.raft(*images, num_flow_updates=self.num_flow_updates)
        flows = [f[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w] for f in flows]
        return flows if return_all else flows[-1]


def _official_to_ours(key: str) -> Optional[str]:
    m = re.fullmatch(r"flow_net_pre_convs\.convs\.(\d+)\.0\.(weight|bias)", key)
    if m:
        return f"reduce.{m.group(1)}.{m.group(2)}"
    m = re.fullmatch(r"flow_net\.(conv[123])\.(\d+)\.0\.(weight|bias)", key)
    if m:
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    m = re.fullmatch(r"flow_net\.(pred[123])\.(conv|scale|bias)\.(weight|bias)", key)
    if m:
        head = "flow" if m.group(2) == "conv" else m.group(2)
        return f"{m.group(1)}.{head}.{m.group(3)}"
    m = re.fullmatch(r"flow_net\.(up(?:feat|flow)[23])\.weight", key)
    if m:
        return f"{m.group(1)}.weight"
    return None


def convert_official_flow_state_dict(
    state_dict: Dict[str, torch.Tensor], *, prefix: str = ""
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """haotian-liu/yolact_edge ``flow_net.*`` / ``flow_net_pre_convs.*`` -> :class:`FlowNetMini`.

    Mapping (``prefix`` + ours; a leading ``module.`` is stripped):

    ====================================================  ===================================
    ``flow_net_pre_convs.convs.{i}.0.{weight,bias}``      ``reduce.{i}.{weight,bias}``
    ``flow_net.conv{1,2,3}.{i}.0.{weight,bias}``          ``conv{1,2,3}.{i}.{weight,bias}``
    ``flow_net.pred{k}.conv.weight``                      ``pred{k}.flow.weight``
    ``flow_net.pred{k}.{scale,bias}.{weight,bias}``       ``pred{k}.{scale,bias}.{weight,bias}``
    ``flow_net.up{feat,flow}{2,3}.weight``                 ``up{feat,flow}{2,3}.weight``
    ====================================================  ===================================

    Returns:
        (our state dict in float32, the official keys outside the flow net: backbone, FPN,
        SPA, heads - for the caller's own converter). Raises KeyError naming any
        ``flow_net*`` key with no counterpart (e.g. a shuffle-cat or grouped variant).
    """
    ours, unused, unknown = {}, [], []
    for key, value in state_dict.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if not key.startswith(("flow_net.", "flow_net_pre_convs.")):
            unused.append(key)
            continue
        new = _official_to_ours(key)
        if new is None:
            unknown.append(key)
            continue
        ours[prefix + new] = value.float() if value.is_floating_point() else value
    if unknown:
        raise KeyError(f"official flow-net keys with no FlowNetMini counterpart: {unknown}")
    return ours, unused


def load_flow_weights(flow_net: RAFTFlow, path: str) -> None:
    """Load a :class:`RAFTFlow` state dict (keys ``raft.*``) or torchvision's ``raft_small`` one
    (a checkpoint dict's ``"model"`` / ``"state_dict"`` entry is taken) into ``flow_net``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not any(k.startswith("raft.") for k in state):
        state = {f"raft.{k}": v for k, v in state.items()}
    missing, unexpected = flow_net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(
            f"flow weights {path!r} (MODEL.VPSNET.FLOW_WEIGHTS) do not fit RAFT-small: missing "
            f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )
