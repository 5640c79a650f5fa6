from detectron2.config import CfgNode as CN


def add_vpsnet_config(cfg: CN) -> None:
    """Keys of VPSNet (Kim et al., "Video Panoptic Segmentation", CVPR 2020): the switches and
    flow net of the meta-architecture, the Fuse module (``MODEL.VPSNET.FUSE``) and the track head
    (``MODEL.VPSNET.TRACK_HEAD``).

    Defaults are the original's ``configs/cityscapes/fusetrack.py`` (``extra_neck`` =
    ``BFPTcea``, ``track_head`` = ``TrackHead``); the original's names are given per key.
    """
    cfg.MODEL.VPSNET = CN()
    # Fuse the reference frame's FPN features into the target's (the original's extra_neck);
    # False is "VPSNet without fuse": the track head alone on per-frame UPSNet features.
    cfg.MODEL.VPSNET.FUSE_ON = True
    # Track head + per-video memory (the original's track_head); False links each frame's
    # detections to the previous ones by mask IoU (d2ext.modeling.common.Tracker) instead.
    cfg.MODEL.VPSNET.TRACK_ON = True
    # Image flow from the target to the reference frame for the Fuse module, frozen (the
    # original's pre-trained FlowNet2, requires_grad=False): "raft" (torchvision's RAFT-small,
    # d2ext's RAFTFlow; needs frames >= 128 px) or "zero" (no motion: the warp is the identity
    # and only the flow refinement aligns).
    cfg.MODEL.VPSNET.FLOW_NET = "raft"
    # A RAFTFlow (or torchvision raft_small) state dict loaded into the flow net at build time
    # (the original's work_dirs/flownet/FlowNet2_checkpoint.pth.tar); "" keeps its weights as
    # they are (random, or from MODEL.WEIGHTS).
    cfg.MODEL.VPSNET.FLOW_WEIGHTS = ""
    # RAFT's recurrent refinement steps (torchvision's default 12).
    cfg.MODEL.VPSNET.FLOW_NUM_UPDATES = 12
    # Training reference frame: one of these annotated-frame offsets, drawn at random, retrying
    # the others when it falls outside the video (the original's dataset offsets [-1, 1]).
    cfg.MODEL.VPSNET.REFERENCE_OFFSETS = [-1, 1]

    cfg.MODEL.VPSNET.FUSE = CN()
    # FPN levels gathered, fused and scattered back, fine to coarse, all of one width
    # (extra_neck.num_levels 5: P2-P6).
    cfg.MODEL.VPSNET.FUSE.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    # The level whose resolution the levels are gathered at (extra_neck.refine_level 0 = P2).
    cfg.MODEL.VPSNET.FUSE.GATHER_FEATURE = "p2"
    # Refine the caller's flow with the correlation block before the second warp
    # (LiteFlowNetCorr, always on in the original).
    cfg.MODEL.VPSNET.FUSE.FLOW_REFINE = True
    # Search range of the correlation: (2 d + 1)^2 displacement channels (flow_args.search_range).
    cfg.MODEL.VPSNET.FUSE.CORR_MAX_DISPLACEMENT = 4
    # Widths of the 3x3 + LeakyReLU(0.1) convs of the flow-refinement estimator before its last
    # 3x3 conv to 2 channels (OpticalFlowEstimatorCorr: 64, 64, 32).
    cfg.MODEL.VPSNET.FUSE.FLOW_REFINE_CONV_DIMS = [64, 64, 32]
    # 3x3 conv + ReLU after the attention fusion (extra_neck.refine_type 'conv'); False skips it
    # (refine_type None).
    cfg.MODEL.VPSNET.FUSE.FUSION_CONV = True

    cfg.MODEL.VPSNET.TRACK_HEAD = CN()
    # Fully connected layers of the embedding, ReLU between them, none after the last
    # (track_head.num_fcs 2).
    cfg.MODEL.VPSNET.TRACK_HEAD.NUM_FC = 2
    # Width of each FC layer = the embedding size (track_head.fc_out_channels 1024).
    cfg.MODEL.VPSNET.TRACK_HEAD.FC_DIM = 1024
    # Weight of the match cross entropy (track_head.loss_match.loss_weight 0.5).
    cfg.MODEL.VPSNET.TRACK_HEAD.LOSS_WEIGHT = 0.5
    # Inference score = log_softmax(match) + c0 log(detection score) + c1 IoU + c2 same-class
    # against each memory entry (track_head.match_coeff [1.0, 2.0, 10.0]).
    cfg.MODEL.VPSNET.TRACK_HEAD.MATCH_COEFF = [1.0, 2.0, 10.0]
    # IoU given to the "new object" column in that score; its same-class term is always 1
    # (track_head.bbox_dummy_iou, 0 by default).
    cfg.MODEL.VPSNET.TRACK_HEAD.DUMMY_IOU = 0.0
    # A detection matches a memory entry only with a score above this; otherwise it is a new
    # object (the original's best_match_scores start at -100).
    cfg.MODEL.VPSNET.TRACK_HEAD.MIN_MATCH_SCORE = -100.0
