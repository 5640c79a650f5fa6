"""LazyConfig twin of hourglass_2stack_face.yaml: 2 stacks of width 256 on 256x256 crops, the
68 iBUG points, flip test (see the yacs twin for 300-W)."""

from detectron2.config import LazyCall as L
from detectron2.data.detection_utils import create_keypoint_hflip_indices

from .hourglass_8x256_mpii import dataloader, lr_multiplier, model, optimizer, train

model.backbone.num_stacks = 2
model.backbone.num_keypoints = 68
model.flip_test_indices = L(create_keypoint_hflip_indices)(dataset_names=["synth_faces_val"])
dataloader.train.dataset.names = "synth_faces_train"
dataloader.test.dataset.names = "synth_faces_val"

train.max_iter = 50000
train.checkpointer.period = 5000
train.output_dir = "output/hourglass_2stack_face_lazy"
lr_multiplier.scheduler.milestones = [40000]

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
