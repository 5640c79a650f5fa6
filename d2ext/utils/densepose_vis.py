"""DensePose chart results drawn and exported: IUV / contour overlays on an image and IUV PNGs.

A chart result is the ``(labels, uv)`` of one detection from
:func:`d2ext.modeling.densepose.inference.densepose_chart_results`: ``labels`` (h, w) int64 part
ids (0 = background) and ``uv`` (2, h, w) in [0, 1], over the detection box truncated to ints
(top-left corner ``(int(x0), int(y0))`` of its XYWH, see ``box_xyxy_to_int_xywh``).

IUV PNGs follow the original DensePose output (Detectron's ``vis_one_image`` / ``*_IUV.png``):
three uint8 channels ``I``, ``U * 255``, ``V * 255`` (truncated, as the evaluator quantises),
written by OpenCV from an array in (I, U, V) order — so ``cv2.imread`` returns (I, U, V) in
channels 0, 1, 2 (in the file's colour terms: B = I, G = U, R = V). :func:`write_iuv_png` writes
one detection's box-sized map, :func:`write_image_iuv_png` one image-sized map of all
detections, the highest score on top, background 0. Detectron's whole-image file differs in its
composition: it skips detections scoring <= 0.65 and, in ascending score order, fills only pixels
still 0, so the lowest-scoring detection wins an overlap; here the caller's confidence
threshold decides which detections enter and the highest score wins.
"""

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

__all__ = [
    "compose_image_iuv",
    "draw_densepose_contours",
    "draw_densepose_iuv",
    "iuv_array",
    "read_iuv_png",
    "write_image_iuv_png",
    "write_iuv_png",
]

Chart = Tuple[torch.Tensor, torch.Tensor]
NUM_PARTS = 24


def iuv_array(labels: torch.Tensor, uv: torch.Tensor) -> np.ndarray:
    """(h, w, 3) uint8 ``[I, U * 255, V * 255]`` of one chart (truncation, as the evaluator)."""
    from d2ext.evaluation.densepose_evaluation import quantize_iuv

    if labels.dim() != 2 or tuple(uv.shape) != (2, *labels.shape):
        raise ValueError(
            "IUV: labels must be (h, w) and uv (2, h, w), "
            f"got {tuple(labels.shape)} and {tuple(uv.shape)}"
        )
    return np.ascontiguousarray(quantize_iuv(labels.cpu(), uv.cpu().float()).transpose(1, 2, 0))


def _write(path: str, iuv: np.ndarray) -> None:
    if not cv2.imwrite(path, iuv):
        raise OSError(f"could not write IUV PNG {path!r}")


def write_iuv_png(path: str, labels: torch.Tensor, uv: torch.Tensor) -> None:
    """One detection's box-sized IUV PNG (module docstring)."""
    _write(path, iuv_array(labels, uv))


def read_iuv_png(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """(labels (h, w) int64, uv (2, h, w) float32 in [0, 1]) of an IUV PNG."""
    iuv = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if iuv is None or iuv.ndim != 3 or iuv.shape[2] != 3:
        raise ValueError(f"{path!r} is not a 3-channel IUV PNG")
    return iuv[:, :, 0].astype(np.int64), iuv[:, :, 1:].transpose(2, 0, 1).astype(np.float32) / 255


def _placements(boxes_xyxy: torch.Tensor, charts: Sequence[Chart], height: int, width: int):
    """Per chart: (image rows, image cols, chart rows, chart cols) slices inside the image."""
    from d2ext.modeling.densepose.inference import box_xyxy_to_int_xywh

    out = []
    for box, (labels, _) in zip(boxes_xyxy, charts):
        x, y, _, _ = box_xyxy_to_int_xywh(box)
        h, w = labels.shape
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x1 <= x0 or y1 <= y0:
            out.append(None)
            continue
        out.append((slice(y0, y1), slice(x0, x1), slice(y0 - y, y1 - y), slice(x0 - x, x1 - x)))
    return out


def compose_image_iuv(
    image_size: Tuple[int, int],
    boxes_xyxy: torch.Tensor,
    scores: torch.Tensor,
    charts: Sequence[Chart],
) -> np.ndarray:
    """(H, W, 3) uint8 IUV map of all detections: each chart at its box, the higher score
    painted over the lower where its label > 0; background 0."""
    height, width = image_size
    canvas = np.zeros((height, width, 3), np.uint8)
    boxes = boxes_xyxy.detach().cpu().reshape(-1, 4)
    order = torch.argsort(scores.detach().cpu(), stable=True).tolist()  # lowest first
    places = _placements(boxes, charts, height, width)
    for k in order:
        if places[k] is None:
            continue
        rows, cols, crows, ccols = places[k]
        iuv = iuv_array(*charts[k])[crows, ccols]
        fg = iuv[:, :, 0] > 0
        canvas[rows, cols][fg] = iuv[fg]
    return canvas


def write_image_iuv_png(
    path: str,
    image_size: Tuple[int, int],
    boxes_xyxy: torch.Tensor,
    scores: torch.Tensor,
    charts: Sequence[Chart],
) -> None:
    """The whole-image IUV PNG of :func:`compose_image_iuv`."""
    _write(path, compose_image_iuv(image_size, boxes_xyxy, scores, charts))


def _part_colors() -> np.ndarray:
    """(25, 3) uint8 RGB: background black, parts along OpenCV's PARULA colormap."""
    levels = (np.arange(NUM_PARTS + 1) * 255 // NUM_PARTS).astype(np.uint8)
    bgr = cv2.applyColorMap(levels[:, None], cv2.COLORMAP_PARULA)[:, 0]
    colors = bgr[:, ::-1].copy()
    colors[0] = 0
    return colors


def draw_densepose_iuv(
    image_rgb: np.ndarray,
    boxes_xyxy: torch.Tensor,
    scores: torch.Tensor,
    charts: Sequence[Chart],
    alpha: float = 0.7,
    channel: str = "I",
) -> np.ndarray:
    """(H, W, 3) uint8 RGB ``image_rgb`` with the detections' parts (``channel="I"``, one colour
    per part) or U / V (``"U"`` / ``"V"``, JET colormap) blended in with ``alpha`` where a part is
    predicted, the highest score on top."""
    if channel not in ("I", "U", "V"):
        raise ValueError(f"draw_densepose_iuv: channel must be 'I', 'U' or 'V', got {channel!r}")
    iuv = compose_image_iuv(image_rgb.shape[:2], boxes_xyxy, scores, charts)
    fg = iuv[:, :, 0] > 0
    if channel == "I":
        colors = _part_colors()[np.clip(iuv[:, :, 0], 0, NUM_PARTS)]
    else:
        value = iuv[:, :, 1 if channel == "U" else 2]
        colors = cv2.applyColorMap(value, cv2.COLORMAP_JET)[:, :, ::-1]
    out = image_rgb.astype(np.float32).copy()
    out[fg] = (1 - alpha) * out[fg] + alpha * colors[fg]
    return np.clip(out, 0, 255).astype(np.uint8)


def draw_densepose_contours(
    image_rgb: np.ndarray,
    boxes_xyxy: torch.Tensor,
    scores: torch.Tensor,
    charts: Sequence[Chart],
    levels: int = 10,
    colors: Optional[List[Tuple[int, int, int]]] = None,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB ``image_rgb`` with iso-lines of U and V (``levels`` per unit) inside
    each part and the part borders (as the original's contour visualiser), U lines, V lines and
    borders in ``colors`` (default red, blue, white)."""
    u_color, v_color, border_color = colors or [(255, 40, 40), (40, 120, 255), (255, 255, 255)]
    iuv = compose_image_iuv(image_rgb.shape[:2], boxes_xyxy, scores, charts).astype(np.int64)
    part = iuv[:, :, 0]
    u_bin = iuv[:, :, 1] * levels // 256
    v_bin = iuv[:, :, 2] * levels // 256

    def edges(a: np.ndarray) -> np.ndarray:
        e = np.zeros(a.shape, bool)
        e[:, :-1] |= a[:, :-1] != a[:, 1:]
        e[:-1, :] |= a[:-1, :] != a[1:, :]
        return e

    border = edges(part)
    same_part = part > 0
    out = image_rgb.copy()
    out[edges(u_bin) & same_part & ~border] = u_color
    out[edges(v_bin) & same_part & ~border] = v_color
    out[border & (part > 0)] = border_color
    return out
