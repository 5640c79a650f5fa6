from detectron2.config import CfgNode as CN


def add_densepose_config(cfg: CN) -> None:
    """Keys of the DensePose chart head (Güler et al., CVPR 2018) on stock Mask R-CNN ROIs
    (``MODEL.ROI_HEADS.NAME: DensePoseROIHeads``, ``MODEL.DENSEPOSE_ON``). Names and defaults
    are D2 ``projects/DensePose``'s (``densepose_rcnn_R_50_FPN_s1x.yaml`` + its defaults), so its
    configs' keys read the same here.
    """
    # Run the DensePose branch (the ROI heads subclass is a plain StandardROIHeads without it).
    cfg.MODEL.DENSEPOSE_ON = True

    cfg.MODEL.ROI_DENSEPOSE_HEAD = CN()
    # Head on the pooled features: NUM_STACKED_CONVS convs of CONV_HEAD_KERNEL with CONV_HEAD_DIM
    # channels, each + ReLU (the s1x config: 8 x 3x3 x 512).
    cfg.MODEL.ROI_DENSEPOSE_HEAD.NAME = "DensePoseV1ConvXHead"
    cfg.MODEL.ROI_DENSEPOSE_HEAD.NUM_STACKED_CONVS = 8
    cfg.MODEL.ROI_DENSEPOSE_HEAD.CONV_HEAD_DIM = 512
    cfg.MODEL.ROI_DENSEPOSE_HEAD.CONV_HEAD_KERNEL = 3
    # Body parts (fine segmentation has NUM_PATCHES + 1 channels, background included; U and V
    # as many).
    cfg.MODEL.ROI_DENSEPOSE_HEAD.NUM_PATCHES = 24
    # Coarse segmentation channels: 2 (foreground / background) with the s1x configs; the
    # _legacy configs use 15 (14 parts + background).
    cfg.MODEL.ROI_DENSEPOSE_HEAD.NUM_COARSE_SEGM_CHANNELS = 2
    # Predictor: ConvTranspose2d of DECONV_KERNEL with stride 2 (28 -> 56), then bilinear
    # upsampling by UP_SCALE (56 -> 112 = HEATMAP_SIZE).
    cfg.MODEL.ROI_DENSEPOSE_HEAD.DECONV_KERNEL = 4
    cfg.MODEL.ROI_DENSEPOSE_HEAD.UP_SCALE = 2
    cfg.MODEL.ROI_DENSEPOSE_HEAD.HEATMAP_SIZE = 112
    # Pooler of the branch: ROIAlign without the half-pixel shift ("ROIAlign", not
    # "ROIAlignV2", as the original), 28 x 28, sampling ratio 2.
    cfg.MODEL.ROI_DENSEPOSE_HEAD.POOLER_TYPE = "ROIAlign"
    cfg.MODEL.ROI_DENSEPOSE_HEAD.POOLER_RESOLUTION = 28
    cfg.MODEL.ROI_DENSEPOSE_HEAD.POOLER_SAMPLING_RATIO = 2
    # Proposals matched to a GT with IoU above this (and DensePose data) train the branch.
    cfg.MODEL.ROI_DENSEPOSE_HEAD.FG_IOU_THRESHOLD = 0.7
    # Loss weights: coarse segmentation (S, INDEX_WEIGHTS), fine segmentation (I,
    # PART_WEIGHTS), U / V (POINT_REGRESSION_WEIGHTS, on a smooth-L1 summed over points).
    cfg.MODEL.ROI_DENSEPOSE_HEAD.INDEX_WEIGHTS = 5.0
    cfg.MODEL.ROI_DENSEPOSE_HEAD.PART_WEIGHTS = 1.0
    cfg.MODEL.ROI_DENSEPOSE_HEAD.POINT_REGRESSION_WEIGHTS = 0.01
    # Decoder (s1x): a Panoptic-FPN-style merge of the IN_FEATURES levels into one map of
    # COMMON_STRIDE, the only map the DensePose pooler reads.
    cfg.MODEL.ROI_DENSEPOSE_HEAD.DECODER_ON = True
    cfg.MODEL.ROI_DENSEPOSE_HEAD.DECODER_NUM_CLASSES = 256
    cfg.MODEL.ROI_DENSEPOSE_HEAD.DECODER_CONV_DIMS = 256
    cfg.MODEL.ROI_DENSEPOSE_HEAD.DECODER_NORM = ""
    cfg.MODEL.ROI_DENSEPOSE_HEAD.DECODER_COMMON_STRIDE = 4
