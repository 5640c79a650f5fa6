from detectron2.config import CfgNode as CN


def add_common_config(cfg: CN) -> None:
    """Keys shared by every d2ext model: data mapping and evaluation."""
    # Name of the train-time dataset mapper in d2ext.data.MAPPER_REGISTRY; "" keeps D2's
    # DatasetMapper. Test-time loading uses D2's DatasetMapper(is_train=False), except for
    # mappers that set ``used_at_test_time`` (TopDownLandmarkMapper), which map the test sets too.
    cfg.INPUT.DATASET_MAPPER_NAME = ""

    # Datasets registered before anything reads DATASETS.TRAIN/TEST (d2ext.data.datasets): a list
    # of (name, format, annotation file, image root, *extra paths) tuples, e.g.
    # [("my_train", "coco", "ann/train.json", "images/train")]; "coco_panoptic" entries add the
    # panoptic PNG folder and optionally the instances json:
    # ("my_val", "coco_panoptic", "panoptic_val.json", "images/val", "panoptic_val/").
    # Formats: d2ext.data.DATASET_FORMATS. Relative paths are resolved against the working dir.
    cfg.DATASETS.REGISTER = []

    # Optimizer of Trainer.build_optimizer: "SGD" (D2's, with SOLVER.MOMENTUM/NESTEROV) or
    # "ADAMW" (betas from SOLVER.ADAM_BETAS); both honour D2's per-parameter LR/WD keys and
    # SOLVER.CLIP_GRADIENTS.
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.ADAM_BETAS = (0.9, 0.999)

    cfg.D2EXT = CN()
    # Synthetic datasets (synth_*) are generated on first use under $DETECTRON2_DATASETS.
    cfg.D2EXT.SYNTHETIC = CN()
    # Generate missing synth_* datasets named in DATASETS.TRAIN/TEST before training.
    cfg.D2EXT.SYNTHETIC.AUTO_GENERATE = True
    # Evaluation: use d2ext's fast evaluators (same API and numbers as D2's) where available.
    cfg.D2EXT.FAST_EVAL = True
    # After each evaluation (Trainer.test), draw the predictions on the first this many images
    # of every DATASETS.TEST dataset with D2's Visualizer into OUTPUT_DIR/vis/<dataset>/
    # (overwritten by the next evaluation); 0 draws nothing.
    cfg.D2EXT.VIS_PERIOD_IMAGES = 0
