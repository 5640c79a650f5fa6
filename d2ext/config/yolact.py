from detectron2.config import CfgNode as CN


def add_yolact_config(cfg: CN) -> None:
    """Keys of YOLACT (Bolya et al., ICCV 2019) and its YOLACT-FPN backbone.

    Anchor sizes/aspect ratios use D2's own ``MODEL.ANCHOR_GENERATOR`` keys (set by the YOLACT
    configs with ``NAME: YOLACTAnchorGenerator``); everything else lives under ``MODEL.YOLACT``.
    """
    cfg.MODEL.YOLACT = CN()
    # Number of foreground classes C (the classifier has C + 1 outputs, background is index 0).
    cfg.MODEL.YOLACT.NUM_CLASSES = 80
    # Side S of the square network input: every image is stretched to S x S (550 in the paper).
    cfg.MODEL.YOLACT.INPUT_SIZE = 550

    # --- YOLACT-FPN backbone (build_yolact_resnet_fpn_backbone) ---
    # Bottom-up features that feed the FPN, fine to coarse (C3-C5).
    cfg.MODEL.YOLACT.FPN_IN_FEATURES = ["res3", "res4", "res5"]
    # Channels of every FPN level.
    cfg.MODEL.YOLACT.FPN_OUT_CHANNELS = 256
    # Extra levels made by stride-2 3x3 convs on the output P5 (then P6): 2 gives P6, P7.
    cfg.MODEL.YOLACT.FPN_NUM_DOWNSAMPLE = 2
    # ReLU after the 3x3 output ("pred") convs of P3-P5 (the original's relu_pred_layers).
    cfg.MODEL.YOLACT.FPN_RELU_OUTPUTS = True

    # --- Protonet ---
    # FPN level the protonet reads (P3: the finest, stride 8).
    cfg.MODEL.YOLACT.PROTO_IN_FEATURE = "p3"
    # Number k of prototype masks (and of coefficients per anchor).
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = 32
    # Channels of the protonet's 3x3 convs.
    cfg.MODEL.YOLACT.PROTO_CONV_DIM = 256
    # 3x3 conv+ReLU layers before / after the x2 bilinear upsampling.
    cfg.MODEL.YOLACT.PROTO_NUM_CONVS_BEFORE_UPSAMPLE = 3
    cfg.MODEL.YOLACT.PROTO_NUM_CONVS_AFTER_UPSAMPLE = 1
    # d2ext's addition (empty in the original and the paper configs): per entry, one more x2
    # bilinear upsample + ReLU and a 3x3 conv with that many channels + ReLU before the 1x1
    # conv. [64] gives stride-2 prototypes (128 x 128 for a 256 input): at stride 4 even a
    # perfect fit of the mask targets caps the IoU of 8-32 px objects at ~0.78 (docs/RESULTS.md).
    cfg.MODEL.YOLACT.PROTO_EXTRA_UPSAMPLE_DIMS = []

    # --- Shared prediction head ---
    # FPN levels the head runs on (shared weights), fine to coarse; one anchor size per level.
    cfg.MODEL.YOLACT.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Channels of the head's shared 3x3 conv ("upfeature").
    cfg.MODEL.YOLACT.HEAD_CONV_DIM = 256
    # Original quirk (use_square_anchors): every anchor is square with the side of the width
    # D2 computes, i.e. sides s*{1, sqrt(1/2), sqrt(2)}. Needed to load official weights.
    cfg.MODEL.YOLACT.SQUARE_ANCHORS = False

    # --- Matching and losses ---
    # Box2BoxTransform weights; (10, 10, 5, 5) == SSD variances (0.1, 0.2).
    cfg.MODEL.YOLACT.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # Matcher: IoU < 0.4 background, [0.4, 0.5) ignored, >= 0.5 foreground.
    cfg.MODEL.YOLACT.IOU_THRESHOLDS = [0.4, 0.5]
    cfg.MODEL.YOLACT.IOU_LABELS = [0, -1, 1]
    # Non-positive anchors covered by a crowd box (intersection / anchor area) above this
    # fraction are ignored; >= 1 disables crowd handling.
    cfg.MODEL.YOLACT.CROWD_IOU_THRESHOLD = 0.7
    # OHEM: hard negatives kept per positive anchor.
    cfg.MODEL.YOLACT.NEG_POS_RATIO = 3
    # Loss weights (bbox_alpha, conf_alpha, mask_alpha, semantic_segmentation_alpha).
    cfg.MODEL.YOLACT.LOSS_BOX_WEIGHT = 1.5
    cfg.MODEL.YOLACT.LOSS_CLS_WEIGHT = 1.0
    cfg.MODEL.YOLACT.LOSS_MASK_WEIGHT = 6.125
    cfg.MODEL.YOLACT.LOSS_SEM_SEG_WEIGHT = 1.0
    # Train the auxiliary semantic-segmentation 1x1 conv on P3 (train only; not used at test).
    cfg.MODEL.YOLACT.SEM_SEG_LOSS = True
    # At most this many positive anchors per image get a mask loss (random sample).
    cfg.MODEL.YOLACT.MASKS_TO_TRAIN = 100
    # Mask-loss targets at prototype size. False (the original): GT masks bilinearly downsampled
    # and binarised at 0.5. True (d2ext's option, off in the paper configs): area-averaged and
    # not binarised, the covered fraction of each prototype pixel (the original's
    # mask_proto_binarize_downsampled_gt=False, with area instead of bilinear downsampling). At
    # stride 4 a binarised target cannot follow a boundary inside a prototype pixel: a perfect
    # fit of it gives 8-32 px objects a mean mask IoU of 0.70, of soft targets 0.78.
    cfg.MODEL.YOLACT.MASK_SOFT_TARGETS = False
    # YOLACT++'s fast mask re-scoring (off in YOLACT and the paper configs): MaskIoUNet regresses
    # each positive's mask IoU from its cropped predicted mask at prototype size; at test the
    # class scores (Instances.scores, so box and mask AP alike) are multiplied by it.
    cfg.MODEL.YOLACT.MASK_IOU_ON = False
    # Output channels of its 3x3 stride-2 unpadded convs (the original's maskiou_net).
    cfg.MODEL.YOLACT.MASK_IOU_NET_CHANNELS = [8, 16, 32, 64, 128]
    # Weight of its smooth-L1 loss (maskiou_alpha), divided by the number of positives.
    cfg.MODEL.YOLACT.LOSS_MASK_IOU_WEIGHT = 25.0
    # Positives whose GT mask covers <= this many prototype pixels do not train it
    # (discard_mask_area = 5 * 5).
    cfg.MODEL.YOLACT.MASK_IOU_MIN_GT_AREA = 25.0
    # GT boxes whose width or height is <= this many pixels at INPUT_SIZE are dropped
    # (the original's discard_box_width/height = 4/550, a guard against NaN losses).
    cfg.MODEL.YOLACT.MIN_GT_BOX_SIZE = 4.0
    # The original's training augmentation (SSD photometric distortion, zoom-out, IoU-constrained
    # crop; d2ext/data/transforms/ssd.py) before the flip and S x S resize of
    # YOLACTDatasetMapper. False: resize + flip only.
    cfg.MODEL.YOLACT.SSD_AUGMENTATION = True
    # Scale jitter at training (d2ext's addition, off in the original and the paper configs):
    # (min, max) scale for D2's ResizeScale to S x S followed by FixedSizeCrop((S, S)) (the
    # large-scale-jitter recipe of D2's new baselines), after the SSD augmentation; objects
    # whose centre the crop leaves out are dropped. Empty: off.
    cfg.MODEL.YOLACT.SCALE_JITTER = []

    # --- Inference ---
    # Anchors whose best foreground score is <= this are dropped before NMS.
    cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.05
    # IoU threshold of (Fast) NMS.
    cfg.MODEL.YOLACT.NMS_THRESH_TEST = 0.5
    # Candidates per class entering NMS.
    cfg.MODEL.YOLACT.TOPK_CANDIDATES_TEST = 200
    # Detections kept per image after NMS.
    cfg.MODEL.YOLACT.DETECTIONS_PER_IMAGE = 100
    # "fast" (the paper's Fast NMS) or "standard" (D2 batched_nms, for comparison).
    cfg.MODEL.YOLACT.NMS_TYPE = "fast"
    # Fast NMS: also drop kept candidates whose class score is <= SCORE_THRESH_TEST (the
    # original leaves this off; it then reports low-scoring detections too).
    cfg.MODEL.YOLACT.SECOND_THRESHOLD = False
    # Assembled masks are binarised at this probability.
    cfg.MODEL.YOLACT.MASK_THRESHOLD = 0.5
