"""DensePose chart drawing and IUV PNG export (``d2ext.utils.densepose_vis``) on hand-made
(labels, uv) results: the original's IUV channel convention, whole-image composition with the
highest score on top, box truncation and clipping, overlays."""

import cv2
import numpy as np
import pytest
import torch

from d2ext.utils.densepose_vis import (
    compose_image_iuv,
    draw_densepose_contours,
    draw_densepose_iuv,
    iuv_array,
    read_iuv_png,
    write_image_iuv_png,
    write_iuv_png,
)


def _chart(h, w, part, u=0.5, v=0.25):
    labels = torch.full((h, w), part, dtype=torch.int64)
    labels[0, 0] = 0  # one background pixel
    uv = torch.stack([torch.full((h, w), u), torch.full((h, w), v)]) * (labels > 0)
    return labels, uv


def test_iuv_png_channels_are_the_originals(tmp_path):
    labels = torch.tensor([[0, 3], [24, 1]])
    uv = torch.tensor([[[0.0, 0.999], [1.0, 0.5]], [[0.0, 0.1], [0.2, 1.3]]])
    path = str(tmp_path / "det.png")
    write_iuv_png(path, labels, uv)
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # as the original's IUV files are read
    assert raw[:, :, 0].tolist() == [[0, 3], [24, 1]]
    assert raw[:, :, 1].tolist() == [[0, 254], [255, 127]]  # U * 255 truncated
    assert raw[:, :, 2].tolist() == [[0, 25], [51, 255]]  # clamped to 255
    lab, uv_back = read_iuv_png(path)
    assert lab.tolist() == labels.tolist() and uv_back.shape == (2, 2, 2)
    assert np.array_equal(iuv_array(labels, uv), raw)
    with pytest.raises(ValueError, match=r"labels must be \(h, w\) and uv \(2, h, w\)"):
        iuv_array(labels, uv[:1])


def test_whole_image_highest_score_on_top(tmp_path):
    boxes = torch.tensor([[2.9, 3.7, 12.9, 13.7], [6.0, 6.0, 16.0, 16.0], [25.0, 25.0, 40.0, 40.0]])
    scores = torch.tensor([0.9, 0.5, 0.3])
    # the first box truncates to (2, 3, 10, 10); the third is partly outside a 30 x 32 image
    charts = [_chart(10, 10, 5, u=0.2), _chart(10, 10, 7, u=0.6), _chart(15, 15, 9)]
    iuv = compose_image_iuv((30, 32), boxes, scores, charts)
    assert iuv.shape == (30, 32, 3) and iuv.dtype == np.uint8
    assert iuv[3, 2, 0] == 0  # the first chart's background pixel (its top-left)
    assert iuv[4, 3].tolist() == [5, 51, 63]
    assert iuv[10, 10, 0] == 5  # overlap: the 0.9 detection is on top
    assert iuv[14, 14, 0] == 7 and iuv[14, 14, 1] == 153
    assert iuv[29, 31, 0] == 9 and iuv[26, 25, 0] == 9 and iuv[24, 24, 0] == 0
    # the order given does not matter, only the scores
    flipped = compose_image_iuv((30, 32), boxes.flip(0), scores.flip(0), charts[::-1])
    assert np.array_equal(flipped, iuv)
    path = str(tmp_path / "image_IUV.png")
    write_image_iuv_png(path, (30, 32), boxes, scores, charts)
    assert np.array_equal(cv2.imread(path, cv2.IMREAD_UNCHANGED), iuv)
    # a box entirely outside the image draws nothing
    outside = compose_image_iuv(
        (30, 32), torch.tensor([[40.0, 40.0, 50.0, 50.0]]), scores[:1], charts[:1]
    )
    assert not outside.any()


def test_overlays():
    image = np.full((30, 30, 3), 100, np.uint8)
    boxes, scores = torch.tensor([[5.0, 5.0, 25.0, 25.0]]), torch.tensor([0.8])
    labels = torch.zeros(20, 20, dtype=torch.int64)
    labels[:, :10], labels[:, 10:] = 3, 4
    u = torch.linspace(0, 1, 20)[None].expand(20, 20)
    charts = [(labels, torch.stack([u, u.t()]))]
    iuv = draw_densepose_iuv(image, boxes, scores, charts)
    assert iuv.shape == image.shape and (iuv[0, 0] == 100).all()
    assert not np.array_equal(iuv[10, 8], iuv[10, 18])  # parts 3 and 4 differ in colour
    u_img = draw_densepose_iuv(image, boxes, scores, charts, channel="U")
    assert not np.array_equal(u_img[10, 6], u_img[10, 12])
    with pytest.raises(ValueError, match="channel must be"):
        draw_densepose_iuv(image, boxes, scores, charts, channel="X")
    contours = draw_densepose_contours(image, boxes, scores, charts)
    assert (contours[10, 14] == (255, 255, 255)).all()  # the border between parts 3 and 4
    assert (contours == (255, 40, 40)).all(-1).any() and (contours == (40, 120, 255)).all(-1).any()
    assert (contours[0:5] == 100).all()  # nothing outside the box
