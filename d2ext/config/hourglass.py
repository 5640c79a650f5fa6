from detectron2.config import CfgNode as CN


def add_hourglass_config(cfg: CN) -> None:
    """Keys of the Stacked Hourglass backbone (Newell et al., ECCV 2016; ``StackedHourglass``,
    ``MODEL.BACKBONE.NAME: StackedHourglass``). Defaults are the paper's MPII model, the one the
    official princeton-vl checkpoints hold.

    The official weights expect RGB in [0, 1]: ``INPUT.FORMAT: RGB``,
    ``MODEL.PIXEL_MEAN: [0, 0, 0]``, ``MODEL.PIXEL_STD: [255, 255, 255]``.
    """
    cfg.MODEL.HOURGLASS = CN()
    # Number S of stacked hourglasses (the original's nstack): 8 in the paper; every stack
    # outputs heatmaps ("stack0".."stack{S-1}") for intermediate supervision.
    cfg.MODEL.HOURGLASS.NUM_STACKS = 8
    # Channels of every hourglass and residual (inp_dim): 256 in the paper.
    cfg.MODEL.HOURGLASS.WIDTH = 256
    # 2x poolings per hourglass (the Hourglass(4, ...) hard-coded in the original): 4 takes the
    # 64x64 maps of a 256 input down to 4x4. Inputs must be divisible by 4 * 2^DEPTH.
    cfg.MODEL.HOURGLASS.DEPTH = 4
    # Number K of heatmaps per stack (oup_dim): the 16 MPII joints.
    cfg.MODEL.HOURGLASS.NUM_KEYPOINTS = 16
    # Extra channels of each hourglass's outer lower branch (increase): 0 in the paper configs.
    cfg.MODEL.HOURGLASS.INCREASE = 0
    # D2 norm of every BatchNorm: "BN" as the original; "SyncBN" for small per-GPU batches.
    cfg.MODEL.HOURGLASS.NORM = "BN"
