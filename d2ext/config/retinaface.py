from detectron2.config import CfgNode as CN


def add_retinaface_config(cfg: CN) -> None:
    """Keys of RetinaFace (Deng et al., CVPR 2020; ``MODEL.META_ARCHITECTURE: RetinaFace``), its
    MobileNet-0.25 backbone (``build_retinaface_mobilenet_backbone``) and its training mapper
    (``INPUT.DATASET_MAPPER_NAME: RetinaFaceMapper``). Defaults are biubug6/Pytorch_Retinaface's
    ``cfg_mnet``; the anchors use D2's own ``MODEL.ANCHOR_GENERATOR`` keys (set by the configs to
    the original's min_sizes with aspect ratio 1 and offset 0.5).

    The official weights expect BGR minus (104, 117, 123): ``INPUT.FORMAT: BGR``,
    ``MODEL.PIXEL_MEAN: [104, 117, 123]``, ``MODEL.PIXEL_STD: [1, 1, 1]``.
    """
    cfg.MODEL.RETINAFACE = CN()
    # Backbone features feeding RetinaFace's FPN, fine to coarse (strides 8, 16, 32): the
    # original's return_layers (stage1-3 of MobileNet-0.25, layer2-4 = res3-res5 of ResNet-50).
    cfg.MODEL.RETINAFACE.IN_FEATURES = ["stage1", "stage2", "stage3"]
    # Channels of every FPN / SSH level and of the heads' input (out_channel: 64 mnet, 256 R-50).
    cfg.MODEL.RETINAFACE.OUT_CHANNELS = 64
    # LeakyReLU slope in the FPN and SSH: the original uses 0.1 when OUT_CHANNELS <= 64 and 0
    # (plain ReLU) otherwise; a negative value applies that rule.
    cfg.MODEL.RETINAFACE.LEAKY_RELU_SLOPE = -1.0
    # D2 norm of the FPN and SSH convs ("BN" as the original; "FrozenBN" / "SyncBN" possible).
    cfg.MODEL.RETINAFACE.NORM = "BN"
    # Train the five-landmark regression branch (the seed's multi-task claim is measured by
    # turning this off: the branch still exists, its loss is not applied).
    cfg.MODEL.RETINAFACE.LANDMARK_ON = True

    # Run the network in channels-last memory format: the same numbers up to float rounding, and
    # on CPUs 1.3x faster per image and 1.8x per batch of 8 VGA images (oneDNN's depthwise and
    # 1x1 convolutions; docs/benchmarks.md). The original runs channels-first.
    cfg.MODEL.RETINAFACE.CHANNELS_LAST = True

    # --- Training (MultiBoxLoss of the original) ---
    # Box coding weights (1 / variance): the original's variances [0.1, 0.2] -> (10, 10, 5, 5).
    cfg.MODEL.RETINAFACE.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # Landmark offsets are divided by this x the anchor size (the original's variance[0]).
    cfg.MODEL.RETINAFACE.LANDMARK_REG_WEIGHT = 10.0
    # Anchors with IoU >= this to a face are positives (overlap_thresh 0.35).
    cfg.MODEL.RETINAFACE.IOU_THRESHOLD = 0.35
    # Faces whose best anchor IoU is below this are not forced onto an anchor (the original's
    # valid_gt_idx; an image whose every face is below it trains as all background).
    cfg.MODEL.RETINAFACE.FORCED_MATCH_MIN_IOU = 0.2
    # Hard negatives per positive (OHEM, negpos_ratio 7).
    cfg.MODEL.RETINAFACE.NEG_POS_RATIO = 7
    # loss = BBOX * box smooth-L1 + CLS * softmax CE + LANDMARK * landmark smooth-L1 (2, 1, 1).
    cfg.MODEL.RETINAFACE.LOSS_WEIGHT_BBOX = 2.0
    cfg.MODEL.RETINAFACE.LOSS_WEIGHT_CLS = 1.0
    cfg.MODEL.RETINAFACE.LOSS_WEIGHT_LANDMARK = 1.0

    # --- Inference (detect.py / test_widerface.py) ---
    # Face probability below which anchors are dropped (confidence_threshold).
    cfg.MODEL.RETINAFACE.SCORE_THRESH_TEST = 0.02
    # Highest-scoring anchors kept before NMS (detect.py's top_k); <= 0: no limit, as
    # test_widerface.py (the WIDER evaluation script applies neither this nor the next limit).
    cfg.MODEL.RETINAFACE.TOPK_CANDIDATES_TEST = 5000
    # NMS IoU threshold (nms_threshold).
    cfg.MODEL.RETINAFACE.NMS_THRESH_TEST = 0.4
    # Detections kept per image after NMS (detect.py's keep_top_k); <= 0: no limit.
    cfg.MODEL.RETINAFACE.DETECTIONS_PER_IMAGE = 750
    # NMS with the legacy "+1" box areas of the original's py_cpu_nms (exact parity); False is
    # torchvision's continuous-coordinate IoU.
    cfg.MODEL.RETINAFACE.NMS_LEGACY_PLUS_ONE = True

    # --- MobileNet-0.25 backbone (the original's MobileNetV1 in models/net.py) ---
    cfg.MODEL.MOBILENET = CN()
    # Stages returned (stage1: stride 8, 64 ch; stage2: 16, 128 ch; stage3: 32, 256 ch).
    cfg.MODEL.MOBILENET.OUT_FEATURES = ["stage1", "stage2", "stage3"]
    # LeakyReLU slope of every conv of the backbone (0.1 in the original).
    cfg.MODEL.MOBILENET.LEAKY_RELU_SLOPE = 0.1
    # D2 norm of the backbone convs.
    cfg.MODEL.MOBILENET.NORM = "BN"

    # --- Training augmentation (data/data_augment.py preproc; RetinaFaceMapper) ---
    cfg.INPUT.RETINAFACE = CN()
    # Side of the square training input (image_size: 640 mnet, 840 R-50).
    cfg.INPUT.RETINAFACE.TRAIN_SIZE = 640
    # Square crop side as a fraction of the image's short side, drawn from these (PRE_SCALES).
    cfg.INPUT.RETINAFACE.CROP_SCALES = [0.3, 0.45, 0.6, 0.8, 1.0]
    # Crop attempts before falling back to the whole image padded to a square (250).
    cfg.INPUT.RETINAFACE.CROP_TRIALS = 250
    # The original's colour distortion (brightness, contrast, saturation, hue on uint8).
    cfg.INPUT.RETINAFACE.DISTORT = True
    # Probability of a horizontal mirror (landmarks swapped by the dataset's keypoint_flip_map).
    cfg.INPUT.RETINAFACE.MIRROR_PROB = 0.5
    # Resize with an interpolation drawn from the original's five cv2 methods (else linear).
    cfg.INPUT.RETINAFACE.RANDOM_INTERPOLATION = True
