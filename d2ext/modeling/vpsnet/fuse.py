"""VPSNet's Fuse module (Kim et al., "Video Panoptic Segmentation", CVPR 2020, sec. 3.1): the
FPN levels of the target frame are enriched with those of a reference frame, aligned by flow.

Per image pair, with the levels listed fine to coarse and ``g`` the gather level (P2):

1. gather: every level resized to level ``g``'s size and averaged, for the target and the
   reference; coarser levels by nearest upsampling, finer ones (none at P2) by adaptive max pooling;
2. warp the reference's gathered map onto the target with the caller's flow;
3. optionally refine that flow: a small conv net reads the target map, the local correlation of
   target and warped reference (search range 4) and the flow, predicts a residual flow, and the
   warped reference is warped once more with it;
4. fuse target and warped reference with TCEA attention (:class:`TemporalSpatialAttention`),
   then a 3x3 conv + ReLU;
5. scatter: the fused map is resized to every level, coarser ones by adaptive max pooling, finer
   ones by nearest upsampling, and added to that level as a residual.

Source: mcahny/vps @ 138503e, ``mmdet/models/extra_necks/bfp_tcea.py`` (``BFPTcea``: gather
96-109, forward 111-149), ``mmdet/models/utils/tcea_modules.py`` (``TCEA_Fusion``),
``mmdet/models/flow_modules/flow_modules.py`` (``LiteFlowNetCorr``, ``WarpingLayer``) and the
correlation kernel ``correlation_package/correlation_cuda_kernel.cu``; settings from
``configs/cityscapes/fusetrack.py`` (5 levels, refine_level 0, refine_type 'conv', 2 frames with
the target at index 0).

Deliberate differences from the original:

* The flow comes from the caller (d2ext's shared flow module, e.g. :class:`RAFTFlow`) instead of
  a frozen FlowNet2, whose CUDA ops no longer build.
* The warp is ``warp_features(flow_units="pixels", align_corners=True)``: a zero flow is the
  identity. The original's ``WarpingLayer`` builds an align-corners grid (``linspace(-1, 1)``,
  flow divided by ``(W - 1) / 2``) but calls ``grid_sample`` with PyTorch 1.4's default
  ``align_corners=False``, which shrinks the sampled map by ``(W - 1) / W`` around its centre.
* The correlation is pure torch (shift and multiply), no custom op; same values as the kernel.
* The spatial attention is upsampled to the map's exact size instead of ``scale_factor=2``: the
  same for even sizes, and odd sizes (where the original's product fails) work.
* Only one reference frame (the config's ``nframes=2``); the original's optional next frame is
  not supported.
"""

from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn

from d2ext.modeling.common.warp import warp_features

__all__ = [
    "FlowRefinement",
    "TemporalSpatialAttention",
    "VPSNetFuse",
    "gather_levels",
    "local_correlation",
    "resize_flow",
    "scatter_levels",
]


def local_correlation(
    x1: torch.Tensor, x2: torch.Tensor, max_displacement: int = 4
) -> torch.Tensor:
    """FlowNet correlation with a 1x1 kernel and stride 1, the original's ``Correlation(pad_size=d,
    kernel_size=1, max_displacement=d, stride1=1, stride2=1)``.

    Args:
        x1, x2: (N, C, H, W) maps of one shape.
        max_displacement: ``d``; displacements ``-d..d`` on each axis.
    Returns:
        (N, (2d + 1)^2, H, W): channel ``(dy + d) * (2d + 1) + (dx + d)`` at ``(y, x)`` is
        ``sum_c x1[c, y, x] * x2[c, y + dy, x + dx] / C`` (the kernel divides by
        ``kernel_size^2 * C``), with ``x2`` zero outside the map.
    """
    if x1.dim() != 4 or x1.shape != x2.shape:
        raise ValueError(
            f"local_correlation wants two (N, C, H, W) maps of one shape, got "
            f"{tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    if max_displacement < 0:
        raise ValueError(
            f"local_correlation: max_displacement must be >= 0, got {max_displacement}"
        )
    d = max_displacement
    h, w = x1.shape[-2:]
    padded = F.pad(x2, (d, d, d, d))
    out = []
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            shifted = padded[:, :, d + dy : d + dy + h, d + dx : d + dx + w]
            out.append((x1 * shifted).mean(dim=1))
    return torch.stack(out, dim=1)


def gather_levels(features: Sequence[torch.Tensor], gather_index: int) -> torch.Tensor:
    """Mean of the levels resized to level ``gather_index``'s size: coarser levels by nearest
    upsampling, finer levels by adaptive max pooling (``BFPTcea.gather``).

    Args:
        features: (N, C, H_l, W_l) maps, fine to coarse.
    Returns:
        (N, C, H_g, W_g).
    """
    size = features[gather_index].shape[-2:]
    resized = []
    for i, x in enumerate(features):
        if i < gather_index:
            resized.append(F.adaptive_max_pool2d(x, output_size=size))
        elif i == gather_index:
            resized.append(x)
        else:
            resized.append(F.interpolate(x, size=size, mode="nearest"))
    return sum(resized) / len(resized)


def scatter_levels(
    fused: torch.Tensor, features: Sequence[torch.Tensor], gather_index: int
) -> List[torch.Tensor]:
    """``features[l] + resize(fused)`` per level: coarser levels (and the gather level itself, an
    identity) by adaptive max pooling, finer levels by nearest upsampling (``BFPTcea.forward``'s
    scatter)."""
    outs = []
    for i, x in enumerate(features):
        size = x.shape[-2:]
        if i < gather_index:
            residual = F.interpolate(fused, size=size, mode="nearest")
        else:
            residual = F.adaptive_max_pool2d(fused, output_size=size)
        outs.append(x + residual)
    return outs


def resize_flow(flow: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Pixel flow (N, 2, h, w) -> the same motion in pixels of an (H, W) grid: bilinear resize
    (``align_corners=False``) and x scaled by ``W / w``, y by ``H / h``. For an image flow and a
    stride-4 map this is the original's ``interpolate(scale_factor=0.25) * 0.25``."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    return out * out.new_tensor([size[1] / w, size[0] / h]).view(1, 2, 1, 1)


def _conv_lrelu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.LeakyReLU(0.1))


class FlowRefinement(nn.Module):
    """Residual flow from the target map, its correlation with the warped reference and the
    current flow (the original's ``LiteFlowNetCorr`` + ``OpticalFlowEstimatorCorr``): 3x3 convs
    + LeakyReLU(0.1) of ``conv_dims`` widths, then a 3x3 conv to 2 channels."""

    def __init__(self, channels: int, *, max_displacement: int, conv_dims: Sequence[int]):
        super().__init__()
        if not conv_dims:
            raise ValueError("FlowRefinement needs at least one conv width")
        self.max_displacement = max_displacement
        layers = []
        in_channels = channels + (2 * max_displacement + 1) ** 2 + 2
        for dim in conv_dims:
            layers.append(_conv_lrelu(in_channels, dim))
            in_channels = dim
        layers.append(nn.Conv2d(in_channels, 2, 3, padding=1))
        self.estimator = nn.Sequential(*layers)

    def forward(
        self, target: torch.Tensor, warped_ref: torch.Tensor, flow: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            target, warped_ref: (N, C, H, W) gathered maps.
            flow: (N, 2, H, W) the flow ``warped_ref`` was warped with, in pixels of this map.
        Returns:
            (N, 2, H, W) residual flow in pixels, to warp ``warped_ref`` with once more.
        """
        corr = local_correlation(target, warped_ref, self.max_displacement)
        return self.estimator(torch.cat([target, corr, flow], dim=1))


class TemporalSpatialAttention(nn.Module):
    """TCEA fusion (the original's ``TCEA_Fusion``, from EDVR) of ``num_frames`` aligned maps,
    frame 0 being the target (the config's ``center=0``).

    Temporal: ``p_t = sigmoid(sum_c e(x_t) * e0(x_0))`` per pixel, with 3x3 embeddings ``e``
    (every frame; ``tAtt_1``) and ``e0`` (the target; ``tAtt_2``); each frame is multiplied by its
    ``p_t``. Fusion: 1x1 conv + LeakyReLU(0.1) of the concatenated weighted frames (``fea_fusion``).
    Spatial (``sAtt_*``): 1x1 conv, max- and avg-pool 3x3 stride 2, 1x1 conv of both, 3x3 conv,
    bilinear upsampling, 3x3 conv -> ``a``; a 1x1 - LeakyReLU - 1x1 branch of ``a`` -> ``b``;
    output ``fused * sigmoid(a) * 2 + b``.
    """

    def __init__(self, channels: int, *, num_frames: int = 2):
        super().__init__()
        c = channels
        self.num_frames = num_frames
        self.temporal_embed = nn.Conv2d(c, c, 3, padding=1)
        self.temporal_embed_target = nn.Conv2d(c, c, 3, padding=1)
        self.fusion = nn.Conv2d(num_frames * c, c, 1)
        self.spatial_reduce = nn.Conv2d(num_frames * c, c, 1)
        self.spatial_pool_fuse = nn.Conv2d(2 * c, c, 1)
        self.spatial_conv = nn.Conv2d(c, c, 3, padding=1)
        self.spatial_out = nn.Conv2d(c, c, 3, padding=1)
        self.spatial_add_1 = nn.Conv2d(c, c, 1)
        self.spatial_add_2 = nn.Conv2d(c, c, 1)

    def forward(
        self, frames: torch.Tensor, *, return_attention: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]]:
        """
        Args:
            frames: (N, F, C, H, W) aligned maps, frame 0 the target.
            return_attention: also return ``(temporal (N, F, H, W), spatial (N, C, H, W))``, both
                sigmoids in [0, 1].
        Returns:
            (N, C, H, W) fused map.
        """
        if frames.dim() != 5 or frames.shape[1] != self.num_frames:
            raise ValueError(
                f"TemporalSpatialAttention wants (N, {self.num_frames}, C, H, W) frames, got "
                f"{tuple(frames.shape)}"
            )
        n, f, c, h, w = frames.shape
        emb_target = self.temporal_embed_target(frames[:, 0])
        emb = self.temporal_embed(frames.reshape(n * f, c, h, w)).view(n, f, c, h, w)
        temporal = torch.sigmoid((emb * emb_target.unsqueeze(1)).sum(dim=2))
        weighted = (frames * temporal.unsqueeze(2)).reshape(n, f * c, h, w)
        fused = F.leaky_relu(self.fusion(weighted), 0.1)

        att = F.leaky_relu(self.spatial_reduce(weighted), 0.1)
        pooled = torch.cat(
            [F.max_pool2d(att, 3, stride=2, padding=1), F.avg_pool2d(att, 3, stride=2, padding=1)],
            dim=1,
        )
        att = F.leaky_relu(self.spatial_pool_fuse(pooled), 0.1)
        att = F.leaky_relu(self.spatial_conv(att), 0.1)
        att = F.interpolate(att, size=(h, w), mode="bilinear", align_corners=False)
        att = self.spatial_out(att)
        att_add = self.spatial_add_2(F.leaky_relu(self.spatial_add_1(att), 0.1))
        spatial = torch.sigmoid(att)
        out = fused * spatial * 2 + att_add
        if return_attention:
            return out, (temporal, spatial)
        return out


class VPSNetFuse(nn.Module):
    """The Fuse module: the target frame's FPN levels plus a residual of the flow-aligned,
    attention-fused gathered maps of target and reference (see the module docstring)."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_features: Sequence[str],
        gather_feature: str = "p2",
        flow_refine: bool = True,
        corr_max_displacement: int = 4,
        flow_refine_conv_dims: Sequence[int] = (64, 64, 32),
        fusion_conv: bool = True,
    ):
        """
        Args:
            input_shape: shapes of the backbone's outputs; the ``in_features`` must share one
                channel count.
            in_features: levels fused, fine to coarse (P2-P6 in the original).
            gather_feature: the level whose size the levels are gathered at (P2).
            flow_refine: refine the flow with the correlation block before a second warp.
            corr_max_displacement: search range ``d`` of the correlation.
            flow_refine_conv_dims: widths of the refinement's 3x3 + LeakyReLU convs.
            fusion_conv: a 3x3 conv + ReLU after the attention (refine_type 'conv').
        """
        super().__init__()
        in_features = list(in_features)
        missing = [f for f in in_features if f not in input_shape]
        if not in_features or missing:
            raise ValueError(
                f"VPSNetFuse: in_features {in_features} not all in {list(input_shape)}"
            )
        if gather_feature not in in_features:
            raise ValueError(f"VPSNetFuse: gather_feature {gather_feature!r} not in {in_features}")
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"VPSNetFuse: levels {in_features} differ in channels {channels}")
        strides = [input_shape[f].stride for f in in_features]
        if None not in strides and strides != sorted(strides):
            raise ValueError(f"VPSNetFuse: in_features must go fine to coarse, strides {strides}")
        self.in_features = in_features
        self.gather_index = in_features.index(gather_feature)
        self.channels = channels.pop()
        self.flow_refine = (
            FlowRefinement(
                self.channels,
                max_displacement=corr_max_displacement,
                conv_dims=flow_refine_conv_dims,
            )
            if flow_refine
            else None
        )
        self.attention = TemporalSpatialAttention(self.channels, num_frames=2)
        self.fusion_conv = (
            nn.Sequential(nn.Conv2d(self.channels, self.channels, 3, padding=1), nn.ReLU())
            if fusion_conv
            else None
        )
        # BFPTcea.init_weights (xavier uniform, zero bias) runs last over every conv of the
        # module, TCEA's own kaiming init included (two_stage.py init_weights).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        fuse = cfg.MODEL.VPSNET.FUSE
        return {
            "input_shape": input_shape,
            "in_features": fuse.IN_FEATURES,
            "gather_feature": fuse.GATHER_FEATURE,
            "flow_refine": fuse.FLOW_REFINE,
            "corr_max_displacement": fuse.CORR_MAX_DISPLACEMENT,
            "flow_refine_conv_dims": fuse.FLOW_REFINE_CONV_DIMS,
            "fusion_conv": fuse.FUSION_CONV,
        }

    def _levels(self, features: Dict[str, torch.Tensor], which: str) -> List[torch.Tensor]:
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise ValueError(f"VPSNetFuse: {which} features lack levels {missing}")
        levels = [features[f] for f in self.in_features]
        for name, x in zip(self.in_features, levels):
            if x.dim() != 4 or x.shape[1] != self.channels:
                raise ValueError(
                    f"VPSNetFuse: {which} level {name!r} is {tuple(x.shape)}, expected "
                    f"(N, {self.channels}, H, W)"
                )
        return levels

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        ref_features: Dict[str, torch.Tensor],
        flow: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: the target frame's levels, each (N, C, H_l, W_l).
            ref_features: the reference frame's, same levels and shapes.
            flow: (N, 2, h, w) pixel flow from the target to the reference on an (h, w) grid
                (e.g. the padded input image): the reference's content at target pixel
                ``(x, y)`` is at ``(x + flow[0], y + flow[1])`` (``RAFTFlow(target, reference)``).
                Resized to the gather level with :func:`resize_flow`.
        Returns:
            ``features`` with every ``in_features`` level replaced by its fused version (same
            shapes); other keys unchanged.
        """
        levels = self._levels(features, "target")
        ref_levels = self._levels(ref_features, "reference")
        for name, x, r in zip(self.in_features, levels, ref_levels):
            if x.shape != r.shape:
                raise ValueError(
                    f"VPSNetFuse: level {name!r} of target {tuple(x.shape)} and reference "
                    f"{tuple(r.shape)} differ"
                )
        n = levels[0].shape[0]
        if flow.dim() != 4 or flow.shape[:2] != (n, 2):
            raise ValueError(f"VPSNetFuse: flow must be ({n}, 2, h, w), got {tuple(flow.shape)}")

        target = gather_levels(levels, self.gather_index)
        ref = gather_levels(ref_levels, self.gather_index)
        flow = resize_flow(flow.to(target.dtype), target.shape[-2:])
        warped = warp_features(ref, flow, flow_units="pixels", align_corners=True)
        if self.flow_refine is not None:
            # the residual flow warps the already warped map (a second resampling)
            residual = self.flow_refine(target, warped, flow)
            warped = warp_features(warped, residual, flow_units="pixels", align_corners=True)
        fused = self.attention(torch.stack([target, warped], dim=1))
        if self.fusion_conv is not None:
            fused = self.fusion_conv(fused)
        outs = dict(features)
        outs.update(zip(self.in_features, scatter_levels(fused, levels, self.gather_index)))
        return outs
