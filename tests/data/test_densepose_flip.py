"""DensePose flip (``d2ext.data.densepose_flip``): the symmetry table in the official
``UV_symmetry_transforms.mat`` layout, the original's quantised lookup; and ``DensePoseMapper``
(flip, resize, crop / clipping of the ground truth, people without points, masks from dp_masks)."""

import numpy as np
import pytest
import scipy.io
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from d2ext import add_d2ext_config
from d2ext.data.densepose_flip import (
    MASK_LABEL_SYMMETRIES,
    POINT_LABEL_SYMMETRIES,
    SYNTHETIC_UV_SYMMETRY,
    flip_iuv,
    hflip_densepose_data,
    load_uv_symmetry,
    load_uv_symmetry_mat,
    synthetic_uv_symmetry,
    write_uv_symmetry_mat,
)
from d2ext.data.mappers import DensePoseMapper
from d2ext.structures import DensePoseData


def _official_layout(path, u_maps, v_maps, index_list=None):
    """A .mat as the official file: (1, 24) cell arrays of 256 x 256 doubles."""
    cells = {}
    for key, maps in (("U_transforms", u_maps), ("V_transforms", v_maps)):
        c = np.empty((1, 24), dtype=object)
        for k in range(24):
            c[0, k] = maps[k]
        cells[key] = c
    if index_list is not None:
        cells["Index_Symmetry_List"] = np.asarray(index_list, float)[None]
    scipy.io.savemat(str(path), cells)


def test_synthetic_table_lookup_is_the_originals():
    table = synthetic_uv_symmetry()
    i = torch.tensor([0, 1, 3, 4, 23, 24, 15])
    u = torch.tensor([0.3, 0.5, 0.2, 0.999, 1.0, 0.0, 0.7])
    v = torch.tensor([0.6, 0.25, 0.9, 0.1, 0.5, 1.0, 0.0])
    i2, u2, v2 = flip_iuv(i, u, v, table)
    assert i2.tolist() == [0, 1, 4, 3, 24, 23, 16]
    # background keeps u, v; parts: (coord * 255).long() then the table (U kept, V reversed)
    assert u2[0] == u[0] and v2[0] == v[0]
    u_loc, v_loc = (u[1:] * 255).long(), (v[1:] * 255).long()
    torch.testing.assert_close(u2[1:], u_loc.float() / 255)
    torch.testing.assert_close(v2[1:], 1 - v_loc.float() / 255)
    # flipping twice comes back within the quantisation
    i3, u3, v3 = flip_iuv(i2, u2, v2, table)
    assert i3.tolist() == i.tolist()
    assert (u3 - u).abs().max() <= 2 / 255 and (v3 - v).abs().max() <= 2 / 255
    with pytest.raises(ValueError, match="part labels must be in 0..24"):
        flip_iuv(torch.tensor([25]), torch.tensor([0.1]), torch.tensor([0.1]), table)


def test_official_mat_layout_is_read(tmp_path):
    rng = np.random.default_rng(0)
    u_maps, v_maps = rng.random((24, 256, 256)), rng.random((24, 256, 256))
    path = tmp_path / "UV_symmetry_transforms.mat"
    _official_layout(path, u_maps, v_maps)
    table = load_uv_symmetry_mat(str(path))
    assert table.point_label_symmetries.tolist() == list(POINT_LABEL_SYMMETRIES)
    assert table.mask_label_symmetries.tolist() == list(MASK_LABEL_SYMMETRIES)
    np.testing.assert_array_equal(table.u_transforms.numpy(), u_maps.astype(np.float32))
    # the lookup: part 7 at u = 0.5 (u_loc 127), v = 0.2 (v_loc 51) reads [6, 51, 127]
    i2, u2, v2 = flip_iuv(torch.tensor([7]), torch.tensor([0.5]), torch.tensor([0.2]), table)
    assert i2.item() == 8
    assert u2.item() == np.float32(u_maps[6, 51, 127]) and v2.item() == np.float32(
        v_maps[6, 51, 127]
    )
    assert load_uv_symmetry(str(path)).u_transforms.shape == (24, 256, 256)
    # our writer: same layout plus Index_Symmetry_List, read back identically
    out = tmp_path / "written.mat"
    write_uv_symmetry_mat(str(out), table)
    again = load_uv_symmetry_mat(str(out))
    assert torch.equal(again.u_transforms, table.u_transforms)
    assert torch.equal(again.point_label_symmetries, table.point_label_symmetries)
    assert scipy.io.loadmat(str(out))["U_transforms"].shape == (1, 24)


def test_mat_errors_name_the_file(tmp_path):
    maps = np.zeros((24, 256, 256))
    bad_list = tmp_path / "list.mat"
    _official_layout(bad_list, maps, maps, index_list=[1] * 24)
    with pytest.raises(ValueError, match=r"list\.mat.*must permute"):
        load_uv_symmetry_mat(str(bad_list))
    small = tmp_path / "small.mat"
    _official_layout(small, np.zeros((24, 16, 16)), maps)
    with pytest.raises(ValueError, match=r"small\.mat.*U_transforms\{1\} is \(16, 16\)"):
        load_uv_symmetry_mat(str(small))
    missing = tmp_path / "missing.mat"
    scipy.io.savemat(str(missing), {"U_transforms": np.zeros((1, 24))})
    with pytest.raises(ValueError, match=r"missing\.mat.*no 'V_transforms'"):
        load_uv_symmetry_mat(str(missing))
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        load_uv_symmetry(str(tmp_path / "nope.mat"))
    assert load_uv_symmetry(SYNTHETIC_UV_SYMMETRY).v_transforms[0, 0, 0] == 1.0


def _data(n=4, with_segm=True):
    segm = torch.zeros(256, 256, dtype=torch.uint8)
    segm[10:20, 0:5] = 2  # right hand on the box's left edge
    segm[100:200, 50:150] = 1
    return DensePoseData(
        x=torch.tensor([0.0, 10.5, 128.0, 255.0])[:n],
        y=torch.tensor([5.0, 20.0, 128.0, 250.0])[:n],
        i=torch.tensor([3, 1, 0, 24])[:n],
        u=torch.tensor([0.2, 0.4, 0.0, 0.6])[:n],
        v=torch.tensor([0.3, 0.5, 0.0, 0.7])[:n],
        segm=segm if with_segm else None,
    )


def test_hflip_densepose_data():
    table = synthetic_uv_symmetry()
    out = hflip_densepose_data(_data(), table)
    assert out.x.tolist() == [256.0, 245.5, 128.0, 1.0]  # the original's 256 - x
    assert out.y.tolist() == _data().y.tolist() and out.i.tolist() == [4, 1, 0, 23]
    assert out.segm[10:20, 251:256].eq(3).all() and out.segm[10:20, :251].eq(0).all()
    assert out.segm[100:200, 106:206].eq(1).all() and int(out.segm.sum()) == 50 * 3 + 100 * 100
    assert hflip_densepose_data(_data(with_segm=False), table).segm is None


# ---- DensePoseMapper --------------------------------------------------------------------------


def _dataset_dict(tmp_path, boxes, datas, h=60, w=80, segmentation=True):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)
    anns = []
    for k, (box, d) in enumerate(zip(boxes, datas)):
        ann = {"bbox": box, "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0, "id": k}
        if segmentation:
            x, y, bw, bh = box
            ann["segmentation"] = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
        if d is not None:
            ann.update(dp_x=d.x.tolist(), dp_y=d.y.tolist(), dp_I=d.i.tolist(), dp_U=d.u.tolist())
            ann["dp_V"] = d.v.tolist()
            if d.segm is not None:
                from d2ext.data.synthetic.annotations import mask_to_rle

                ann["dp_masks"] = [
                    mask_to_rle(d.segm.numpy() == c) if (d.segm == c).any() else []
                    for c in range(1, 15)
                ]
        anns.append(ann)
    return {"file_name": str(path), "height": h, "width": w, "image_id": 1, "annotations": anns}


def _mapper(augs, mask_on=False, uv_symmetry="synthetic"):
    return DensePoseMapper(
        True,
        augmentations=augs,
        image_format="RGB",
        use_instance_mask=mask_on,
        instance_mask_format="bitmask",
        uv_symmetry=synthetic_uv_symmetry() if uv_symmetry == "synthetic" else uv_symmetry,
    )


def test_mapper_identity_flip_and_resize(tmp_path):
    d = _data()
    dd = _dataset_dict(tmp_path, [[8.0, 4.0, 32.0, 40.0], [50.0, 10.0, 20.0, 20.0]], [d, None])
    out = _mapper([])(dd)["instances"]
    gt = out.gt_densepose
    assert len(gt) == 2 and gt[1] is None
    for name in ("x", "y", "i", "u", "v", "segm"):
        torch.testing.assert_close(getattr(gt[0], name), getattr(d, name))

    flipped = _mapper([T.RandomFlip(prob=1.0)])(dd)["instances"]
    f = flipped.gt_densepose[0]
    expected = hflip_densepose_data(d, synthetic_uv_symmetry())
    assert flipped.gt_boxes.tensor[0].tolist() == [80 - 40, 4.0, 80 - 8, 44.0]
    for name in ("x", "y", "i", "u", "v", "segm"):
        torch.testing.assert_close(getattr(f, name), getattr(expected, name))

    resized = _mapper([T.Resize((120, 160))])(dd)["instances"].gt_densepose[0]
    torch.testing.assert_close(resized.x, d.x)
    torch.testing.assert_close(resized.segm, d.segm)

    # no symmetry table (a dataset without densepose_transform_src): a mirror is refused
    with pytest.raises(ValueError, match="densepose_transform_src"):
        _mapper([T.RandomFlip(prob=1.0)], uv_symmetry=None)(dd)
    # without a mirror the table is not needed
    assert len(_mapper([], uv_symmetry=None)(dd)["instances"]) == 2


def test_mapper_keeps_points_on_the_box_edge(tmp_path):
    """dp_x = 0 / 256 land a rounding step outside the box after a resize: kept, clamped."""
    d = _data()
    d = type(d)(
        torch.tensor([0.0, 256.0, 0.0]), torch.tensor([0.0, 256.0, 128.0]), d.i[:3], d.u[:3],
        d.v[:3], d.segm,
    )  # fmt: skip
    dd = _dataset_dict(tmp_path, [[8.3, 4.7, 31.1, 40.9]], [d])
    for augs in ([T.Resize((97, 131))], [T.Resize((97, 131)), T.RandomFlip(prob=1.0)]):
        g = _mapper(augs)(dd)["instances"].gt_densepose[0]
        assert len(g.x) == 3 and float(g.x.min()) >= 0 and float(g.x.max()) <= 256


def test_mapper_crop_drops_points_outside_and_resamples_segm(tmp_path):
    d = _data()
    dd = _dataset_dict(tmp_path, [[8.0, 4.0, 32.0, 40.0]], [d])
    # keep x in [24, 80): the box becomes [24, 40) wide 16 (half of it), points re-expressed
    crop = T.CropTransform(24, 0, 56, 60)
    out = DensePoseMapper(True, augmentations=[], image_format="RGB", use_instance_mask=False)
    out.augmentations = T.AugmentationList([_Fixed(crop)])
    inst = out(dd)["instances"]
    assert inst.gt_boxes.tensor[0].tolist() == [0.0, 4.0, 16.0, 44.0]
    g = inst.gt_densepose[0]
    # original x 128 (image 24) -> 0 in the new box; 255 -> 254; 0 and 10.5 fall outside
    assert g.x.tolist() == [0.0, 254.0] and g.i.tolist() == [0, 24]
    assert g.segm.shape == (256, 256)
    # new column j samples old column floor(128 + (j + 0.5) / 2)
    assert g.segm[150, 0] == 1 and g.segm[150, 43] == 1 and g.segm[150, 44] == 0


class _Fixed(T.Augmentation):
    def __init__(self, t):
        super().__init__()
        self.t = t

    def get_transform(self, image):
        return self.t


def test_mapper_without_densepose_and_mask_from_dp_masks(tmp_path):
    dd = _dataset_dict(tmp_path, [[8.0, 4.0, 32.0, 40.0]], [None])
    inst = _mapper([])(dd)["instances"]
    assert len(inst.gt_densepose) == 1 and inst.gt_densepose[0] is None
    dd = _dataset_dict(tmp_path, [[8.0, 4.0, 32.0, 40.0]], [_data()], segmentation=False)
    inst = _mapper([], mask_on=True)(dd)["instances"]
    mask = inst.gt_masks.tensor[0]
    # dp_masks region rows 100..200, cols 50..150 of 256 over a 32 x 40 box at (8, 4)
    assert mask[4 + 20, 8 + 12] and not mask[4 + 1, 8 + 30] and mask.sum() > 0


def test_mapper_from_config_reads_the_table(tmp_path, new_name):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    maps = np.full((24, 256, 256), 0.25)
    path = tmp_path / "sym.mat"
    _official_layout(path, maps, maps)
    a, b = new_name("dp"), new_name("dp")
    for n, src in ((a, str(path)), (b, SYNTHETIC_UV_SYMMETRY)):
        DatasetCatalog.register(n, list)
        MetadataCatalog.get(n).set(densepose_transform_src=src)
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.DATASETS.TRAIN = (a,)
    mapper = DensePoseMapper(cfg, is_train=True)
    assert mapper.uv_symmetry.u_transforms.unique().tolist() == [0.25]
    cfg.DATASETS.TRAIN = (a, b)
    with pytest.raises(ValueError, match="different densepose_transform_src"):
        DensePoseMapper(cfg, is_train=True)
