from detectron2.config import CfgNode as CN


def add_hourglass_keypoint_head_config(cfg: CN) -> None:
    """Keys of :class:`d2ext.modeling.hourglass.HourglassKeypointHead`, the small stacked
    hourglass that replaces D2's keypoint head in a stock Keypoint R-CNN
    (``MODEL.ROI_KEYPOINT_HEAD.NAME: HourglassKeypointHead``). The D2 keys it shares with the
    stock head keep their meaning: ``NUM_KEYPOINTS``, ``POOLER_RESOLUTION`` (the heatmaps are
    4x it, 56 for D2's 14, as D2's head), ``LOSS_WEIGHT`` and
    ``NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS``; ``CONV_DIMS`` is unused.
    """
    hg = cfg.MODEL.ROI_KEYPOINT_HEAD.HOURGLASS = CN()
    # Hourglass stacks after the 2x upsampling of the RoI features; every stack predicts
    # heatmaps and is supervised (the paper's intermediate supervision), the last one is decoded.
    hg.NUM_STACKS = 2
    # Channels of the input conv, the 2x transposed conv and every hourglass residual (whose
    # bottleneck runs at half of it). 2 stacks of 128 cost ~1/10 of D2's default 8 x 512 head per
    # RoI; 2 stacks of 64 about what 8 x 128 costs.
    hg.WIDTH = 128
    # 2x poolings per hourglass, run at 2 * POOLER_RESOLUTION (28 for D2's 14): 28 must be
    # divisible by 2^DEPTH, so 2 (28 -> 14 -> 7).
    hg.DEPTH = 2
    # D2 norm of every residual's BatchNorm and of the input conv ("BN", "GN", "SyncBN", "").
    hg.NORM = "BN"
    # Gaussian sigma of the heatmap targets, in pixels of the 56x56 heatmaps (mmpose's 2 for
    # its 64x48 maps; the same ~1/28 of the map side).
    hg.SIGMA = 2.0
    # Centre the target Gaussians at the exact sub-pixel keypoint (DARK's unbiased encoding)
    # instead of the nearest heatmap pixel.
    hg.UNBIASED_ENCODING = True
    # HeatmapCodec decode of the last stack's maps: "dark" (Taylor step on the log of the
    # blurred map, sub-pixel), "mmpose" (quarter-pixel step) or "princeton". The codec's
    # coordinate convention is handled by the head: the output is in D2 image coordinates.
    hg.DECODE = "dark"
    # Odd size of DARK's modulation blur (mmpose pairs 11 with sigma 2).
    hg.BLUR_KERNEL = 11
