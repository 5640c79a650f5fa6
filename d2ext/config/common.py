from detectron2.config import CfgNode as CN


def add_common_config(cfg: CN) -> None:
    """Keys shared by every d2ext model: data mapping and evaluation."""
    # Name of the train-time dataset mapper in d2ext.data.MAPPER_REGISTRY; "" keeps D2's
    # DatasetMapper. Test-time loading always uses D2's DatasetMapper(is_train=False).
    cfg.INPUT.DATASET_MAPPER_NAME = ""

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
    # Write D2 Visualizer renderings of this many test images to OUTPUT_DIR/vis after eval.
    cfg.D2EXT.VIS_PERIOD_IMAGES = 0
