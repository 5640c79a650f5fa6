"""LazyConfig DensePose chart branch (the LazyConfig form of MODEL.ROI_DENSEPOSE_HEAD, defaults
of d2ext/config/densepose.py = D2 projects/DensePose's s1x): turns a model-zoo
``L(StandardROIHeads)`` into ``L(DensePoseROIHeads)`` with the decoder, the 28 x 28 ROIAlign
pooler on its stride-4 map, the stacked-conv head, the chart predictor and the chart loss."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler

from d2ext.modeling.densepose import (
    DensePoseChartLoss,
    DensePoseChartPredictor,
    DensePoseDecoder,
    DensePoseROIHeads,
    DensePoseV1ConvXHead,
)

_FPN_STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}


def add_densepose_branch(
    roi_heads,
    *,
    fpn_channels: int = 256,
    num_stacked_convs: int = 8,
    conv_head_dim: int = 512,
    decoder_conv_dims: int = 256,
    decoder_num_classes: int = 256,
) -> None:
    """Make ``roi_heads`` (a LazyCall of D2's StandardROIHeads on p2..p5 of an FPN with
    ``fpn_channels``) a ``DensePoseROIHeads`` with the chart branch; the keyword arguments are
    NUM_STACKED_CONVS, CONV_HEAD_DIM, DECODER_CONV_DIMS and DECODER_NUM_CLASSES."""
    in_features = ["p2", "p3", "p4", "p5"]
    roi_heads._target_ = DensePoseROIHeads
    roi_heads.densepose_on = True
    roi_heads.densepose_in_features = in_features
    roi_heads.decoder = L(DensePoseDecoder)(
        input_shape={
            f: ShapeSpec(channels=fpn_channels, stride=_FPN_STRIDES[f]) for f in in_features
        },
        in_features=in_features,
        conv_dims=decoder_conv_dims,
        num_classes=decoder_num_classes,
        common_stride=4,
        norm="",
    )
    # the pooler reads only the decoder's stride-4 map; ROIAlign without the half-pixel shift,
    # as the original
    roi_heads.densepose_pooler = L(ROIPooler)(
        output_size=28, scales=(1.0 / 4,), sampling_ratio=2, pooler_type="ROIAlign"
    )
    roi_heads.densepose_head = L(DensePoseV1ConvXHead)(
        in_channels=decoder_num_classes,
        num_stacked_convs=num_stacked_convs,
        conv_dim=conv_head_dim,
        kernel_size=3,
    )
    # 28 -> 56 (deconv) -> 112 (x2 bilinear) = HEATMAP_SIZE
    roi_heads.densepose_predictor = L(DensePoseChartPredictor)(
        in_channels=conv_head_dim,
        num_coarse_segm_channels=2,
        num_patches=24,
        deconv_kernel=4,
        up_scale=2,
    )
    roi_heads.densepose_loss = L(DensePoseChartLoss)(
        num_patches=24,
        num_coarse_segm_channels=2,
        point_regression_weight=0.01,
        part_weight=1.0,
        index_weight=5.0,
    )
    roi_heads.densepose_fg_iou_threshold = 0.7
