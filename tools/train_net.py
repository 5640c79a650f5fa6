#!/usr/bin/env python
"""Train and evaluate d2ext (and stock D2) models from a yacs config.

Same flags as D2's ``tools/train_net.py``:

    python tools/train_net.py --config-file configs/Base/mask_rcnn_R_18_FPN_synth.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 2   # 2 processes (gloo on CPU)

Your own data, registered from the command line (or the yaml) by ``DATASETS.REGISTER``
(formats: ``d2ext.data.DATASET_FORMATS``):

    python tools/train_net.py --config-file configs/Base/mask_rcnn_R_18_FPN_synth.yaml \
        DATASETS.REGISTER "[('my_train', 'coco', 'ann/train.json', 'images/train')]" \
        DATASETS.TRAIN "('my_train',)" DATASETS.TEST "()" MODEL.ROI_HEADS.NUM_CLASSES 3
"""

import os
import sys

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results

# make `import d2ext` work when running from a source checkout without installing
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import d2ext  # noqa: E402,F401  (registration)
from d2ext.engine import Trainer, setup_cfg  # noqa: E402


def main(args):
    cfg = setup_cfg(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
