from detectron2.config import CfgNode as CN


def add_hourglass_config(cfg: CN) -> None:
    """Keys of the Stacked Hourglass backbone (Newell et al., ECCV 2016; ``StackedHourglass``,
    ``MODEL.BACKBONE.NAME: StackedHourglass``). Defaults are the paper's MPII model, the one the
    official princeton-vl checkpoints hold. Also the keys of the top-down landmark model on
    crops (``MODEL.META_ARCHITECTURE: TopDownLandmarkDetector``, ``MODEL.LANDMARK``) and of its
    mapper (``INPUT.DATASET_MAPPER_NAME: TopDownLandmarkMapper``, ``INPUT.LANDMARK``).

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

    # --- Top-down landmark model (TopDownLandmarkDetector, META_ARCHITECTURE) ---
    cfg.MODEL.LANDMARK = CN()
    # "heatmap": every stack's K heatmaps, trained with Gaussian targets (the paper's
    # formulation); "regression": global average pool of the last stack's features + FC to 2K
    # coordinates (DeepPose-style), the baseline the heatmap model is measured against.
    cfg.MODEL.LANDMARK.HEAD = "heatmap"
    # Heatmap loss, applied to every stack (intermediate supervision) and summed over stacks:
    # "mse_weighted" = mmpose's KeypointMSELoss(use_target_weight=True) (mean over N*K*H*W of
    # w_k (pred - target)^2; unlabelled / out-of-map points have w = 0); "princeton" = the
    # original's plain mean MSE per stack (no weights), averaged over the stacks as its
    # task/pose.py does.
    cfg.MODEL.LANDMARK.LOSS = "mse_weighted"
    # Weight of the heatmap loss.
    cfg.MODEL.LANDMARK.HEATMAP_LOSS_WEIGHT = 1.0
    # Gaussian sigma of the targets in heatmap pixels: the original's output_res / 64, 1 at its
    # 64x64 maps.
    cfg.MODEL.LANDMARK.SIGMA = 1.0
    # Centre the target Gaussians at the exact sub-pixel point (DARK's unbiased encoding) instead
    # of the integer pixel (the original's GenerateHeatmap).
    cfg.MODEL.LANDMARK.UNBIASED_ENCODING = False
    # HeatmapCodec decode: "princeton" (the original's parser: quarter-pixel step), "mmpose" (the
    # same step, mmpose's bounds) or "dark" (Taylor refinement; pair it with UNBIASED_ENCODING).
    cfg.MODEL.LANDMARK.DECODE = "princeton"
    # Odd size of DARK's Gaussian modulation blur (mmpose's 11 for sigma 2 at 64x48 maps).
    cfg.MODEL.LANDMARK.BLUR_KERNEL = 11
    # Flip test: average the heatmaps (regression: the coordinates) of each crop and of its
    # mirror image flipped back, swapping the dataset's keypoint_flip_map pairs. Off in the
    # original's test.py default.
    cfg.MODEL.LANDMARK.FLIP_TEST = False
    # Shift the flipped-back heatmaps one pixel right (mmpose's shift_heatmap). Off: heatmap
    # pixel j covers crop pixels [s j, s (j + 1)) here, so the plain mirror is the exact flip.
    cfg.MODEL.LANDMARK.FLIP_SHIFT = False
    # Weight of the regression head's visibility-weighted L1 loss on crop-normalised ([0, 1])
    # coordinates (mmpose RegressionHead's L1Loss(use_target_weight=True)).
    cfg.MODEL.LANDMARK.REGRESSION_LOSS_WEIGHT = 1.0

    # --- Crops of the top-down mapper (TopDownLandmarkMapper) ---
    cfg.INPUT.LANDMARK = CN()
    # (height, width) of every crop, divisible by 4 * 2^MODEL.HOURGLASS.DEPTH; heatmaps are a
    # quarter of it. The original's input_res 256 (64x64 heatmaps).
    cfg.INPUT.LANDMARK.CROP_SIZE = (256, 256)
    # The crop covers the instance box (widened to the crop's aspect ratio) times this: mmpose's
    # bbox padding 1.25, which the original's MPII scale * 200 box also adds around a person.
    cfg.INPUT.LANDMARK.BOX_PADDING = 1.25
    # Training: the crop side is multiplied by a factor drawn uniformly from this range (the
    # original's aug_scale in [0.75, 1.25]); (1, 1) turns it off.
    cfg.INPUT.LANDMARK.SCALE_RANGE = (0.75, 1.25)
    # Training: rotation by an angle drawn uniformly from [-ROTATION, ROTATION] degrees (the
    # original's aug_rot, 30); 0 turns it off.
    cfg.INPUT.LANDMARK.ROTATION = 30.0
    # Training: probability of a horizontal flip of the crop, swapping the keypoint_flip_map
    # pairs of DATASETS.TRAIN's metadata (the original's 0.5); 0 turns it off.
    cfg.INPUT.LANDMARK.FLIP_PROB = 0.5
    # Training: the crop centre moves by up to this fraction of the padded box size on each axis
    # (mmpose's RandomBBoxTransform shift_factor 0.16); 0 as the original, which has no shift.
    cfg.INPUT.LANDMARK.SHIFT = 0.0
