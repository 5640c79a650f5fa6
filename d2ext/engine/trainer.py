import contextlib
import logging
import os
from collections import OrderedDict
from typing import List

import detectron2.engine.defaults as d2_defaults
import detectron2.utils.comm as comm
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.evaluation import DatasetEvaluator
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from d2ext.config import add_d2ext_config
from d2ext.data import (
    SafeMapper,
    add_dataset_checks,
    build_train_mapper,
    register_datasets,
)
from d2ext.data.build import build_test_time_mapper, is_top_down
from d2ext.evaluation import build_evaluator
from d2ext.utils.visualize import DEFAULT_CONFIDENCE, render_dataset_predictions

from .gradient_clipping import full_model_gradient_clipping
from .video_inference import VideoClipMapper, VideoClipModel, is_clip_dataset

logger = logging.getLogger(__name__)


def register_cfg_datasets(cfg: CfgNode) -> List[str]:
    """Register the datasets of ``cfg.DATASETS.REGISTER`` (see :mod:`d2ext.data.datasets`);
    idempotent, so every entry point (and every DDP process) may call it."""
    return register_datasets(cfg.DATASETS.get("REGISTER", []))


def _prepare_datasets(cfg: CfgNode, names) -> None:
    """Register ``cfg.DATASETS.REGISTER``, generate the synthetic datasets among ``names`` if
    they are not on disk yet (the evaluators read their json files directly, so this happens
    before anything is built), and make loading them report bad records (unknown category
    ids...) naming the image. Per-clip dicts are not D2-format records (their frames are): their
    loader (``d2ext.data.youtube_vis``) validates the json itself."""
    register_cfg_datasets(cfg)
    names = list(names)
    if cfg.D2EXT.SYNTHETIC.AUTO_GENERATE:
        from d2ext.data.synthetic import ensure_synthetic_generated

        ensure_synthetic_generated(names)
    add_dataset_checks([n for n in names if not is_clip_dataset(n)])


@contextlib.contextmanager
def _ddp_device_ids_for(device: str):
    """D2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which torch's DDP
    rejects for CPU modules; multi-process CPU training (gloo) needs ``device_ids=None``.
    Scoped to DefaultTrainer.__init__ so nothing else sees the change."""
    if not device.startswith("cpu"):
        yield
        return
    original = d2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


class Trainer(DefaultTrainer):
    """D2's ``DefaultTrainer`` with d2ext's dispatch:

    * ``build_evaluator``: on the dataset's ``evaluator_type`` (coco, coco_panoptic_seg,
      sem_seg, ...) via :func:`d2ext.evaluation.build_evaluator`;
    * ``build_train_loader``: the mapper the model needs (``INPUT.DATASET_MAPPER_NAME``), also
      at test time for mappers that set ``used_at_test_time`` (:meth:`build_test_mapper`);
    * datasets in ``DATASETS.REGISTER`` are registered, synthetic datasets named in
      ``DATASETS`` are generated on first use;
    * per-clip datasets (``evaluator_type: "youtube_vis"``) in ``DATASETS.TEST`` are evaluated
      clip by clip (:mod:`d2ext.engine.video_inference`: the clip mapper, the model run over
      each video with its state carried, video AP plus the frames' COCO AP);
    * ``test``: after D2's evaluation, ``D2EXT.VIS_PERIOD_IMAGES`` > 0 draws the predictions on
      the first images of each test dataset (:meth:`visualize_predictions`);
    * bad data fails clearly: records are validated at load, an unreadable image is skipped
      with a warning at train time and is an error naming the file at test time.
    """

    def __init__(self, cfg: CfgNode):
        _prepare_datasets(cfg, tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST))
        with _ddp_device_ids_for(cfg.MODEL.DEVICE):
            super().__init__(cfg)

    @classmethod
    def build_model(cls, cfg):
        # models may read the training set's metadata (UPSNet's label space)
        register_cfg_datasets(cfg)
        return super().build_model(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """D2's SGD, or AdamW with ``SOLVER.OPTIMIZER: "ADAMW"`` (same parameter groups); D2's
        gradient clipping, plus ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE: "full_model"`` (the norm of
        all gradients together, as mmdetection's ``grad_clip``)."""
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if clip.ENABLED and clip.CLIP_TYPE == "full_model":
            d2_cfg = cfg.clone()
            d2_cfg.defrost()
            d2_cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
            optimizer = cls.build_optimizer(d2_cfg, model)
            optimizer.__class__ = full_model_gradient_clipping(
                type(optimizer), clip.CLIP_VALUE, clip.NORM_TYPE
            )
            return optimizer
        name = cfg.SOLVER.get("OPTIMIZER", "SGD").upper()
        if name == "SGD":
            return super().build_optimizer(cfg, model)
        if name != "ADAMW":
            raise ValueError(
                f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r}: expected 'SGD' or 'ADAMW'"
            )
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        optimizer = torch.optim.AdamW(
            params,
            lr=cfg.SOLVER.BASE_LR,
            betas=tuple(cfg.SOLVER.ADAM_BETAS),
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
        return maybe_add_gradient_clipping(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        _prepare_datasets(cfg, [dataset_name])
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(
            cfg, mapper=SafeMapper(mapper=build_train_mapper(cfg), is_train=True)
        )

    @classmethod
    def build_test_mapper(cls, cfg):
        """D2's test-time DatasetMapper, or the ``INPUT.DATASET_MAPPER_NAME`` mapper in test
        mode where its class sets ``used_at_test_time`` (the top-down landmark crops); an
        unreadable image is an error naming it."""
        mapper = build_test_time_mapper(cfg)
        if mapper is not None:
            return SafeMapper(mapper=mapper, is_train=False)
        return SafeMapper(cfg, is_train=False)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """D2's test loader with :meth:`build_test_mapper`; one clip per item, every frame
        mapped (:class:`VideoClipMapper`), for a per-clip dataset."""
        _prepare_datasets(cfg, [dataset_name])
        if is_clip_dataset(dataset_name):
            mapper = VideoClipMapper(cfg)
        else:
            mapper = cls.build_test_mapper(cfg)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """D2's ``DefaultTrainer.test``, then (main process, ``D2EXT.VIS_PERIOD_IMAGES`` > 0)
        :meth:`visualize_predictions`.

        With per-clip datasets among ``DATASETS.TEST``, D2's ``test`` runs once per dataset
        (a config clone naming that dataset alone), on a per-clip dataset with the model wrapped
        in :class:`VideoClipModel`; the results are D2's: one dict per dataset name, or the
        dataset's own dict when there is one."""
        register_cfg_datasets(cfg)  # is_clip_dataset reads the metadata
        if any(is_clip_dataset(name) for name in cfg.DATASETS.TEST):
            results = cls._test_per_dataset(cfg, model, evaluators)
        else:
            results = super().test(cfg, model, evaluators)
        num_images = cfg.D2EXT.VIS_PERIOD_IMAGES
        if num_images > 0 and comm.is_main_process():
            cls.visualize_predictions(cfg, model, num_images)
        return results

    @classmethod
    def _test_per_dataset(cls, cfg, model, evaluators=None):
        """D2's ``test`` on each dataset alone (see :meth:`test`), with D2's checks and return
        convention."""
        names = list(cfg.DATASETS.TEST)
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(names):
            raise ValueError(
                f"Trainer.test: {len(evaluators)} evaluators for the {len(names)} datasets of "
                f"DATASETS.TEST {tuple(names)}"
            )
        results = OrderedDict()
        for idx, name in enumerate(names):
            one = cfg.clone()
            one.defrost()
            one.DATASETS.TEST = (name,)
            one.freeze()
            runner = VideoClipModel(model) if is_clip_dataset(name) else model
            evaluator = None if evaluators is None else [evaluators[idx]]
            results[name] = super().test(one, runner, evaluator)
        return list(results.values())[0] if len(results) == 1 else results

    @classmethod
    def visualize_predictions(cls, cfg, model, num_images: int) -> List[str]:
        """Draw ``model``'s predictions on the first ``num_images`` images of each dataset in
        ``cfg.DATASETS.TEST`` with D2's Visualizer into ``OUTPUT_DIR/vis/<dataset>/<image
        stem>.png``; returns the written paths. Per-clip datasets are skipped (a frame drawn
        from a per-image pass would not show the video schedule's prediction; ``tools/demo.py
        --video`` draws videos)."""
        if isinstance(model, DistributedDataParallel):
            model = model.module  # this process alone: no collective forward
        mapper = cls.build_test_mapper(cfg)
        # a top-down model's instances are the given boxes, not detections: draw them all
        top_down = is_top_down(cfg)
        confidence = 0.0 if top_down else DEFAULT_CONFIDENCE
        paths = []
        for name in cfg.DATASETS.TEST:
            if is_clip_dataset(name):
                logger.info("Not drawing %s: a per-clip (video) dataset", name)
                continue
            _prepare_datasets(cfg, [name])
            out_dir = os.path.join(cfg.OUTPUT_DIR, "vis", name)
            dicts = DatasetCatalog.get(name)[:num_images]
            paths += render_dataset_predictions(
                model, mapper, dicts, MetadataCatalog.get(name), out_dir, confidence
            )
            logger.info("Drew the predictions on %d images of %s in %s", len(dicts), name, out_dir)
        return paths


def setup_cfg(args, *, freeze: bool = True) -> CfgNode:
    """Config from ``--config-file`` and trailing opts, with every d2ext key added, then D2's
    ``default_setup`` (logging, output dir, seeding) as D2's train_net does, then the datasets
    of ``DATASETS.REGISTER`` registered."""
    cfg = get_cfg()
    add_d2ext_config(cfg)
    if not args.config_file:
        raise ValueError("--config-file is required")
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"config file {args.config_file!r} does not exist")
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if freeze:
        cfg.freeze()
    default_setup(cfg, args)
    # d2ext's own messages (registered datasets, renderings...) beside D2's, as D2 projects do
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="d2ext")
    register_cfg_datasets(cfg)
    return cfg
