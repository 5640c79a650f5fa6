from detectron2.config import CfgNode as CN


def add_upsnet_config(cfg: CN) -> None:
    """Keys of UPSNet (Xiong et al., CVPR 2019): semantic head and panoptic head.

    Defaults are the paper's COCO setting (upsnet_resnet50_coco_*.yaml); the Cityscapes yaml uses
    SEM_SEG_LOSS_WEIGHT 1.0, ROI_SEM_SEG_LOSS_WEIGHT 0.0, PANOPTIC_LOSS_WEIGHT 0.5,
    SEM_SEG_HEAD.NUM_CONVS 2 and PANOPTIC.STUFF_AREA_LIMIT 2048.
    Thing classes are MODEL.ROI_HEADS.NUM_CLASSES; the semantic head predicts stuff + thing
    classes in UPSNet's "standard" label space: stuff 0..S-1 then things S..S+T-1.
    """
    cfg.MODEL.UPSNET = CN()
    # Number of stuff classes S (without things). COCO panoptic: 53.
    cfg.MODEL.UPSNET.NUM_STUFF_CLASSES = 53
    # Label of ignored pixels in semantic and panoptic targets.
    cfg.MODEL.UPSNET.IGNORE_VALUE = 255

    cfg.MODEL.UPSNET.SEM_SEG_HEAD = CN()
    # FPN levels the FCN subnet is shared over; the first one sets the output (1/4) resolution.
    cfg.MODEL.UPSNET.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # Number of 3x3 convs in the shared FCN subnet (COCO 3, Cityscapes 2); the second to last
    # one reduces the channels to CONV_DIM.
    cfg.MODEL.UPSNET.SEM_SEG_HEAD.NUM_CONVS = 3
    # Output channels of the FCN subnet per level (concatenated over levels before the 1x1).
    cfg.MODEL.UPSNET.SEM_SEG_HEAD.CONV_DIM = 128
    # Deformable 3x3 convs (torchvision deform_conv2d, zero-initialised offsets) as in the paper;
    # False uses plain 3x3 convs.
    cfg.MODEL.UPSNET.SEM_SEG_HEAD.DEFORMABLE = True
    # Normalization after each conv: "" (paper), "GN", "BN", ... (detectron2.layers.get_norm).
    cfg.MODEL.UPSNET.SEM_SEG_HEAD.NORM = ""
    # Weight of the per-pixel semantic cross entropy at 1/4 scale (COCO 0.2, Cityscapes 1.0).
    cfg.MODEL.UPSNET.SEM_SEG_LOSS_WEIGHT = 0.2
    # Weight of the RoI-level semantic loss on GT boxes; 0 disables it. The original scales it by
    # 0.2 * fcn_loss_weight, hence 0.04 for COCO (Cityscapes: disabled).
    cfg.MODEL.UPSNET.ROI_SEM_SEG_LOSS_WEIGHT = 0.04
    # Output side of the RoI-level semantic loss crops (the original's mask_size).
    cfg.MODEL.UPSNET.ROI_SEM_SEG_RESOLUTION = 28

    cfg.MODEL.UPSNET.PANOPTIC = CN()
    # Weight of the panoptic-head cross entropy (COCO 0.1, Cityscapes 0.5).
    cfg.MODEL.UPSNET.PANOPTIC_LOSS_WEIGHT = 0.1
    # Add the unknown class (max thing semantic logit - max instance semantic logit).
    cfg.MODEL.UPSNET.PANOPTIC.UNKNOWN_CLASS = True
    # Training: fraction of GT instances (at least one) fed to the panoptic head; the pixels of
    # the dropped ones become the unknown class (ignored when UNKNOWN_CLASS is False).
    cfg.MODEL.UPSNET.PANOPTIC.BOX_KEEP_FRACTION = 0.7
    # Inference: minimum detection score of the instances entering the panoptic head.
    cfg.MODEL.UPSNET.PANOPTIC.SCORE_THRESH = 0.6
    # Inference: IoU threshold of the class-agnostic NMS over those detections.
    cfg.MODEL.UPSNET.PANOPTIC.NMS_THRESH = 0.5
    # Inference: drop an instance whose mask overlaps kept masks of its class by more than this
    # fraction of its own area (instances visited by decreasing score).
    cfg.MODEL.UPSNET.PANOPTIC.OVERLAP_THRESH = 0.3
    # Inference: an instance segment whose pixels are at least this fraction one stuff class in
    # the semantic argmax becomes that stuff (the original's unified-result step); 0 disables.
    cfg.MODEL.UPSNET.PANOPTIC.STUFF_OVERRIDE_FRACTION = 0.5
    # Inference: stuff classes covering fewer pixels than this become void (COCO 4096,
    # Cityscapes 2048), in output-image pixels.
    cfg.MODEL.UPSNET.PANOPTIC.STUFF_AREA_LIMIT = 4096
