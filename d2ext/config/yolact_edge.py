from detectron2.config import CfgNode as CN


def add_yolact_edge_config(cfg: CN) -> None:
    """Keys of YolactEdge (Liu et al., "YolactEdge: Real-time Instance Segmentation on the Edge",
    ICRA 2021): YOLACT (``MODEL.YOLACT``, which it extends) plus its keyframe feature transfer.

    Defaults are the original's video configs (``yolact_edge_vid_config`` /
    ``..._resnet50_config``: ``cfg.flow`` with ``model 'mini'``, ``warp_layers 'P4P5'``,
    ``use_spa True``); the original's names are given per key.
    """
    cfg.MODEL.YOLACT_EDGE = CN()
    # Every k-th frame of a video is a keyframe: it runs the full YOLACT and its features are
    # kept; the k - 1 frames after it run the backbone only up to C3 and warp the keyframe's
    # P4/P5 with a predicted flow. 1 = every frame a keyframe = plain YOLACT. (The original's
    # eval.py: ``frame_idx % every_k_frames == 0``, 5 in the paper.)
    cfg.MODEL.YOLACT_EDGE.KEYFRAME_INTERVAL = 5
    # Flow estimator between the C3 laterals of the current frame and the keyframe. Only "mini"
    # (FlowNetMini, the original's flow.model 'mini') exists; RAFT reads images, not laterals.
    cfg.MODEL.YOLACT_EDGE.FLOW_NET = "mini"
    # Widths of FlowNetMini's pre-convs (3x3 + LeakyReLU) applied to each lateral
    # (flow.reduce_channels); [] feeds the laterals in unreduced.
    cfg.MODEL.YOLACT_EDGE.FLOW_REDUCE_CHANNELS = [64]
    # Base width of FlowNetMini's encoder; its stages are 1x, 2x, 4x this (flow.encode_channels).
    cfg.MODEL.YOLACT_EDGE.FLOW_ENCODE_CHANNELS = 64
    # Warped features become ``warped * scale + bias`` with the flow net's per-channel scale and
    # bias maps (flow.use_scale_factor and flow.use_scale_bias, both on in the original).
    cfg.MODEL.YOLACT_EDGE.FLOW_SCALE_BIAS = True
    # FPN levels taken from the keyframe by warping (flow.warp_layers 'P4P5'): the top-down sums
    # before the 3x3 output convs; P3 is rebuilt from the warped P4 and the current C3 lateral.
    # Only ["p4", "p5"] is supported.
    cfg.MODEL.YOLACT_EDGE.WARP_FEATURES = ["p4", "p5"]
    # The warp adds ``flow * WARP_FLOW_SCALE`` to grid_sample's normalised identity grid (the
    # original's deform_op divides the predicted flow by 8; align_corners=True, zero padding).
    cfg.MODEL.YOLACT_EDGE.WARP_FLOW_SCALE = 0.125
    # SPA (flow.use_spa): refine the warped P4/P5 with the current C3 lateral,
    # ``x + LeakyReLU(conv3x3(cat(x, c3)))``.
    cfg.MODEL.YOLACT_EDGE.USE_SPA = True
    # Frame distances between a training frame and its keyframe (reference frame) for the
    # temporal training stages (the original's frame_offset_lb..ub = 2..5, forward in time).
    cfg.MODEL.YOLACT_EDGE.FRAME_OFFSETS = [2, 3, 4, 5]
    # What training ``forward`` optimises (what it does not train is frozen). Trained in this
    # order, each stage from the previous one's weights (configs/YolactEdge/*_{flow_gt,flow,
    # joint}.yaml):
    #   "image": YOLACT's losses on single images (the original's COCO / image stage);
    #   "flow_gt": the flow net alone, end-point error against ground-truth flow between the
    #     frame and its "reference_image" (the original's flow stage, train_flow, on
    #     FlyingChairs; here YolactEdgePairMapper's exact synthetic flow, FRAME_OFFSETS [-1]);
    #   "flow": the flow net and SPA, feature-matching loss between the warped keyframe
    #     ("reference_image") P4/P5 and the current frame's own (flow.feature_matching_loss
    #     'cosine' at fm_loss_loc 'L+P'; the feature-matching part of the original's video stage);
    #   "joint": the original's video stage (yolact_edge_vid_config) on frame pairs: YOLACT's
    #     losses on the current frame's full pass and on its non-keyframe (warped) pass
    #     ("loss_*_warp"), plus the feature-matching loss; the ResNet and the FPN laterals frozen
    #     (its fine_tune_layers). The original's two optimizer steps per iteration are one step
    #     on the summed losses here, and its extra COCO batch (dataset.joint) is not reproduced
    #     (d2ext/modeling/yolact_edge/training.py).
    cfg.MODEL.YOLACT_EDGE.TRAIN_STAGE = "image"
    # Weight of the feature-matching loss (flow.fm_loss_alpha).
    cfg.MODEL.YOLACT_EDGE.LOSS_FM_WEIGHT = 1.0
