"""Predictions drawn with D2's ``Visualizer``: used by ``tools/demo.py`` and, after each
evaluation, by the Trainer (``cfg.D2EXT.VIS_PERIOD_IMAGES``)."""

import os
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.evaluation.evaluator import inference_context
from detectron2.structures import Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

from .densepose_vis import draw_densepose_iuv

__all__ = [
    "DEFAULT_CONFIDENCE",
    "densepose_charts",
    "draw_panoptic_tracks",
    "draw_predictions",
    "rendering_path",
    "render_dataset_predictions",
    "track_colors",
]

# instances scoring below this are not drawn (tools/demo.py's --confidence-threshold default)
DEFAULT_CONFIDENCE = 0.5


def draw_predictions(
    image_rgb: np.ndarray,
    predictions: Dict,
    metadata,
    confidence: float = DEFAULT_CONFIDENCE,
    instance_colors: Optional[Callable] = None,
) -> np.ndarray:
    """Render a D2 model output dict on an image.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image at the resolution of the predictions (the
            dataset's ``height`` x ``width``).
        predictions: one model output: "panoptic_seg" (drawn first if present), else
            "instances" (only those with ``scores >= confidence``; DensePose charts of
            ``pred_densepose`` as part colours), else "sem_seg" (C, H, W).
        metadata: the dataset's D2 ``Metadata`` (class names and colors).
        instance_colors: a function of the drawn ``Instances`` (after the confidence filter)
            -> one RGB colour in [0, 1] per instance (:func:`track_colors`); None: D2's
            random colours.

    Returns:
        (H, W, 3) uint8 RGB rendering.
    """
    if "instances" in predictions and "panoptic_seg" not in predictions:
        instances = predictions["instances"].to("cpu")
        instances = instances[instances.scores >= confidence]
        if instances.has("pred_densepose") and len(instances):
            # DensePose: the body parts blended in under D2's boxes / masks
            image_rgb = draw_densepose_iuv(
                image_rgb,
                instances.pred_boxes.tensor,
                instances.scores,
                densepose_charts(instances),
            )
    vis = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    if "panoptic_seg" in predictions:
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        return vis.draw_panoptic_seg(panoptic_seg.to("cpu"), segments_info).get_image()
    if "instances" in predictions:
        instances = predictions["instances"].to("cpu")
        instances = instances[instances.scores >= confidence]
        if instance_colors is not None:
            vis = _ColoredVisualizer(image_rgb, metadata, colors=instance_colors(instances))
        return vis.draw_instance_predictions(instances).get_image()
    if "sem_seg" in predictions:
        return vis.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to("cpu")).get_image()
    raise ValueError(f"nothing to draw in predictions with keys {sorted(predictions)}")


def track_colors(instances) -> List[np.ndarray]:
    """A colour per ``pred_track_ids`` (RGB in [0, 1]): D2's colormap, cycled, so a track keeps
    its colour over a video and consecutive ids differ."""
    palette = colormap(rgb=True, maximum=1)
    return [palette[int(i) % len(palette)] for i in instances.pred_track_ids]


def draw_panoptic_tracks(image_rgb: np.ndarray, predictions: Dict, metadata) -> np.ndarray:
    """A video panoptic output (VPSNet's) with a colour per track: stuff as D2's
    ``draw_panoptic_seg`` draws it, each thing segment in the colour of its track
    (:func:`track_colors` of ``instances.pred_track_ids[segment["instance_id"]]``) with its class.

    Args:
        predictions: "panoptic_seg" ((H, W) ids, segments_info with "isthing"; things with
            "instance_id" indexing "instances") and "instances" with ``pred_track_ids``.
    """
    panoptic, segments = predictions["panoptic_seg"]
    panoptic = panoptic.to("cpu")
    things = [s for s in segments if s["isthing"]]
    stuff = [s for s in segments if not s["isthing"]]
    # thing pixels join the unlabelled region (D2 draws at most one id without segment info)
    known = {s["id"] for s in segments}
    unlabelled = [i for i in torch.unique(panoptic).tolist() if i not in known]
    void = unlabelled[0] if unlabelled else int(panoptic.max()) + 1
    stuff_map = panoptic.clone()
    for s in things:
        stuff_map[panoptic == s["id"]] = void
    vis = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    image = vis.draw_panoptic_seg(stuff_map, stuff).get_image()
    if not things:
        return image
    track_ids = predictions["instances"].pred_track_ids.to("cpu")
    drawn = Instances(
        tuple(panoptic.shape),
        pred_masks=torch.stack([panoptic == s["id"] for s in things]),
        pred_classes=torch.tensor([s["category_id"] for s in things]),
        pred_track_ids=track_ids[[s["instance_id"] for s in things]],
    )
    if all("score" in s for s in things):
        drawn.scores = torch.tensor([float(s["score"]) for s in things])
    colored = _ColoredVisualizer(image, metadata, colors=track_colors(drawn))
    return colored.draw_instance_predictions(drawn).get_image()


class _ColoredVisualizer(Visualizer):
    """D2's Visualizer drawing instances in given colours (``draw_instance_predictions`` picks
    random ones in ``ColorMode.IMAGE``)."""

    def __init__(self, image_rgb, metadata, *, colors):
        super().__init__(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
        self._colors = list(colors)

    def overlay_instances(self, **kwargs):
        kwargs["assigned_colors"] = self._colors
        return super().overlay_instances(**kwargs)


def densepose_charts(instances) -> List:
    """(labels, uv) per detection of ``instances.pred_densepose`` (the original's chart result
    converter: boxes truncated to whole pixels)."""
    from d2ext.modeling.densepose.inference import densepose_chart_results

    return densepose_chart_results(instances.pred_densepose, instances.pred_boxes)


def rendering_path(output_dir: str, file_name: str) -> str:
    """``<output_dir>/<image file stem>.png``."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return os.path.join(output_dir, stem + ".png")


def render_dataset_predictions(
    model: torch.nn.Module,
    mapper: Callable[[Dict], Dict],
    dataset_dicts: Sequence[Dict],
    metadata,
    output_dir: str,
    confidence: float = DEFAULT_CONFIDENCE,
) -> List[str]:
    """Run ``model`` (in eval mode, restored afterwards) on each of ``dataset_dicts`` mapped by
    the test-time ``mapper`` and write :func:`draw_predictions` of each as
    :func:`rendering_path`; returns the written paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    with inference_context(model), torch.no_grad():
        for d in dataset_dicts:
            predictions = model([mapper(d)])[0]
            image = read_image(d["file_name"], format="RGB")
            rendered = draw_predictions(image, predictions, metadata, confidence)
            path = rendering_path(output_dir, d["file_name"])
            cv2.imwrite(path, rendered[:, :, ::-1])
            paths.append(path)
    return paths
