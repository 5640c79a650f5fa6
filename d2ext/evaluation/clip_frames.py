"""Per-frame evaluation of a video model run clip by clip: :class:`ClipFramesEvaluator`.

A video model evaluated on a per-clip dataset (``evaluator_type: "youtube_vis"``) predicts each
frame in the video's order, with its state carried (YolactEdge: keyframes every k frames, the
frames between from warped keyframe features). Its per-frame box / mask AP must be measured on
those predictions, not on a second per-image pass in which every frame would be a keyframe. The
adapter hands each clip's frame inputs and frame outputs (``d2ext.engine.video_inference``'s
``{"frames": [...]}``) to an image evaluator of the per-frame dataset (D2's ``COCOEvaluator`` or
``FastCOCOEvaluator``), which keys them by ``image_id``: the per-clip and the per-frame dicts of
one YouTube-VIS json share their image ids (``d2ext.data.youtube_vis``).
"""

from detectron2.evaluation import DatasetEvaluator

__all__ = ["ClipFramesEvaluator"]


class ClipFramesEvaluator(DatasetEvaluator):
    """Feeds the frames of each clip to a per-frame (image) evaluator.

    Args:
        evaluator: an evaluator of the clips' per-frame dataset (its ``process`` takes D2 image
            inputs with ``image_id`` and outputs with ``instances``). Its results are returned
            unchanged: D2's COCO evaluators give ``"bbox"`` / ``"segm"``, which do not collide
            with :class:`VideoAPEvaluator`'s ``"segm_vis"`` in one ``DatasetEvaluators``.
    """

    def __init__(self, evaluator: DatasetEvaluator):
        self._evaluator = evaluator

    def reset(self):
        self._evaluator.reset()

    def process(self, inputs, outputs):
        """``inputs``: per-clip dicts with ``"frames"`` (the frames' model inputs); ``outputs``:
        per clip ``{"frames": [one output dict per frame]}``."""
        for clip, out in zip(inputs, outputs):
            video = clip.get("video_id", "?")
            if "frames" not in clip:
                raise ValueError(
                    f"video_id={video!r}: the per-clip input has no 'frames' (map clips with "
                    f"d2ext.engine.video_inference.VideoClipMapper)"
                )
            if "frames" not in out:
                raise ValueError(
                    f"video_id={video!r}: the model output has no 'frames' (run clips through "
                    f"d2ext.engine.video_inference.VideoClipModel)"
                )
            if len(out["frames"]) != len(clip["frames"]):
                raise ValueError(
                    f"video_id={video!r}: {len(out['frames'])} frame outputs for "
                    f"{len(clip['frames'])} frames"
                )
            self._evaluator.process(clip["frames"], out["frames"])

    def evaluate(self):
        return self._evaluator.evaluate()
