"""Video Panoptic Quality of per-frame model outputs as a D2 ``DatasetEvaluator``
(``evaluator_type: "cityscapes_vps"``), scored in memory by :mod:`.vpq` (the official
``eval_vpq.py``'s numbers, without writing the predictions as files).

``process()`` keeps each annotated frame's predicted id map (zlib-compressed) and segments;
``evaluate()`` groups the frames into the gt json's videos (:func:`gt_videos`, the same
grouping and checks as :func:`vpq_compute`), checks them against the inputs' ``video_id`` /
``frame_idx`` and adds each video to a :class:`VPQStat`. Frames the gt json does not annotate
(the dense frames between annotated ones) are run by the model but not scored.
"""

import itertools
import json
import logging
import os
import zlib
from collections import OrderedDict
from typing import Dict, List, Optional, Union

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .panoptic_png import read_panoptic_png
from .panoptic_quality import OFFSET
from .vpq import WINDOW_SIZES, VideoFrame, VPQStat, gt_file_name, gt_videos

__all__ = ["VPQEvaluator"]

logger = logging.getLogger(__name__)


class VPQEvaluator(DatasetEvaluator):
    """VPQ (k = 0/5/10/15 and their mean, All / Things / Stuff) and ID switches of video
    panoptic predictions (see :mod:`d2ext.evaluation.vpq`).

    Args:
        dataset_name: a registered video panoptic dataset (format ``cityscapes_vps``); its
            metadata gives ``panoptic_json``, ``panoptic_root`` (the gt), the contiguous id maps
            ``thing_dataset_id_to_contiguous_id`` / ``stuff_dataset_id_to_contiguous_id`` and
            ``frames_per_video``.
        output_dir: receives the official's ``vpq-<k>.txt`` / ``vpq-final.txt`` when given.
        frames_per_video: annotated frames every video must have; "metadata" (default): the
            metadata's ``frames_per_video`` (Cityscapes-VPS: the official 6); None: any number.
        check_official_order: raise where the official script would pair the gt json's images,
            annotations and PNGs differently (:func:`gt_videos`).
        stuff_by_category: give every predicted stuff segment the id ``2^24 - 1 - category id``
            so that a stuff class is one tube over a window (as VPSNet's PNGs colour stuff by
            class); D2's panoptic heads number stuff segments per frame. Things keep their ids,
            which must be track ids, the same for one object over its video.
        distributed: gather the predictions of all ranks; only the main process returns results.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: Optional[str] = None,
        frames_per_video: Union[int, None, str] = "metadata",
        check_official_order: bool = True,
        stuff_by_category: bool = True,
        distributed: bool = True,
    ):
        self._metadata = MetadataCatalog.get(dataset_name)
        self._output_dir = output_dir
        self._stuff_by_category = stuff_by_category
        self._distributed = distributed
        json_file = self._metadata.panoptic_json
        self._gt_root = PathManager.get_local_path(self._metadata.panoptic_root)
        with PathManager.open(json_file) as f:
            gt_json = json.load(f)
        self._categories = {c["id"]: c for c in gt_json["categories"]}
        if frames_per_video == "metadata":
            frames_per_video = self._metadata.get("frames_per_video", None)
        self._videos = gt_videos(
            gt_json,
            json_file,
            frames_per_video=frames_per_video,
            check_official_order=check_official_order,
        )
        self._annotated = {im["id"] for _, frames in self._videos for im, _ in frames}
        self._to_dataset_id = {
            True: {
                v: k for k, v in self._metadata.get("thing_dataset_id_to_contiguous_id", {}).items()
            },
            False: {
                v: k for k, v in self._metadata.get("stuff_dataset_id_to_contiguous_id", {}).items()
            },
        }
        self.reset()

    def reset(self):
        self._predictions: List[Dict] = []

    def _dataset_segment(self, s: dict, where: str) -> dict:
        """A predicted segment with the json's category id (and ``isthing``)."""
        contiguous = int(s["category_id"])
        kinds = [s["isthing"]] if "isthing" in s else [True, False]
        for isthing in kinds:
            if contiguous in self._to_dataset_id[bool(isthing)]:
                return {
                    "id": int(s["id"]),
                    "category_id": self._to_dataset_id[bool(isthing)][contiguous],
                    "isthing": bool(isthing),
                }
        raise ValueError(f"{where}: segment {s['id']} has unknown category_id {contiguous}")

    def _stuff_ids(self, ids: np.ndarray, segments: List[dict], where: str):
        """(ids, segments) with every stuff segment re-numbered by its category."""
        thing_ids = {s["id"] for s in segments if s["isthing"]}
        out_ids, out_segments, seen = ids.copy(), [], set()
        for s in segments:
            if s["isthing"]:
                out_segments.append(s)
                continue
            new = OFFSET - 1 - int(s["category_id"])
            if new in thing_ids:
                raise ValueError(
                    f"{where}: thing id {new} is the id stuff_by_category gives category "
                    f"{s['category_id']}; use thing ids below {OFFSET - 1 - max(self._categories)}"
                )
            out_ids[ids == s["id"]] = new
            if new not in seen:
                seen.add(new)
                out_segments.append(dict(s, id=new))
        return out_ids, out_segments

    def process(self, inputs, outputs):
        """Keep each annotated frame's prediction.

        Args:
            inputs: per-frame dataset dicts with "image_id", "video_id", "frame_idx".
            outputs: dicts with "panoptic_seg" = (id map (H, W) int tensor, 0 = unlabelled,
                segments_info list of {"id", "category_id" (contiguous), "isthing"}).
        """
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            if image_id not in self._annotated:
                continue
            where = f"image_id={image_id!r}"
            missing = [k for k in ("video_id", "frame_idx") if k not in inp]
            if missing:
                raise ValueError(f"{where}: the input has no {missing} (a video dataset's dicts)")
            if "panoptic_seg" not in out:
                raise ValueError(f"{where}: the model output has no 'panoptic_seg'")
            panoptic_img, segments_info = out["panoptic_seg"]
            if segments_info is None:
                raise ValueError(
                    f"{where}: VPQ needs 'panoptic_seg' with a segments_info list (ids, "
                    f"categories), not a label_divisor-encoded map"
                )
            ids = panoptic_img.cpu().numpy().astype(np.int32)
            segments = [self._dataset_segment(dict(s), where) for s in segments_info]
            if self._stuff_by_category:
                ids, segments = self._stuff_ids(ids, segments, where)
            self._predictions.append(
                {
                    "image_id": image_id,
                    "video_id": inp["video_id"],
                    "frame_idx": int(inp["frame_idx"]),
                    "shape": ids.shape,
                    "ids": zlib.compress(np.ascontiguousarray(ids).tobytes(), 1),
                    "segments_info": segments,
                }
            )

    def _frames(self, video, frames, by_image) -> List[VideoFrame]:
        """The scored frames of one gt video, checked against the inputs' video / frame index."""
        preds = [by_image.get(im["id"]) for im, _ in frames]
        missing = [im["id"] for (im, _), p in zip(frames, preds) if p is None]
        if missing:
            raise ValueError(
                f"video {video!r}: no prediction for its annotated frames {missing[:5]}; VPQ "
                f"windows need every annotated frame of a video"
            )
        if len({p["video_id"] for p in preds}) > 1 or any(
            a["frame_idx"] >= b["frame_idx"] for a, b in zip(preds, preds[1:])
        ):
            order = [(p["image_id"], p["video_id"], p["frame_idx"]) for p in preds]
            raise ValueError(
                f"video {video!r}: the inputs' (image_id, video_id, frame_idx) {order} do not "
                f"follow the gt json's frame order"
            )
        out = []
        for (image, ann), p in zip(frames, preds):
            ids = np.frombuffer(bytearray(zlib.decompress(p["ids"])), dtype=np.int32).reshape(
                p["shape"]
            )
            gt = read_panoptic_png(os.path.join(self._gt_root, gt_file_name(image, ann)))
            out.append(VideoFrame(image["id"], gt, ann["segments_info"], ids, p["segments_info"]))
        return out

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        by_image = {p["image_id"]: p for p in predictions}
        stat = VPQStat(self._categories)
        for video, frames in self._videos:
            if any(im["id"] in by_image for im, _ in frames):
                stat.add_video(self._frames(video, frames, by_image), video)
        if stat.num_videos == 0:
            logger.warning("VPQEvaluator: no annotated frame was predicted")
            return {}
        if self._output_dir is not None:
            stat.write_txt(self._output_dir)
        vpq = stat.results()
        res: Dict[str, float] = {}
        for suffix, name in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            res["VPQ" + suffix] = vpq["final"][name]
        for k in WINDOW_SIZES:
            for suffix, name in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
                res[f"VPQ{suffix}@{k}"] = vpq[k][name]
        res["ID_switches"] = stat.id_switches
        logger.info(
            "VPQ over %d videos: %s",
            stat.num_videos,
            ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()
            ),
        )
        return OrderedDict({"vpq": res})
