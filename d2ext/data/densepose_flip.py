"""Horizontal flip of DensePose ground truth through a part / UV symmetry table.

Mirroring an image turns a person's left parts into right ones, and a point at chart
coordinates (u, v) on part ``i`` into some (u', v') on the mirror part ``i'``. The table
(:class:`UVSymmetryTable`) holds the part pairing and, per part, two 256 x 256 lookup maps
``U_transforms[i - 1][v_loc, u_loc]``, ``V_transforms[i - 1][v_loc, u_loc]`` with
``u_loc = int(u * 255)`` (truncation) — the layout of DensePose's ``UV_symmetry_transforms.mat``
(``U_transforms`` / ``V_transforms``: (1, 24) cell arrays of 256 x 256 doubles), looked up the
way the original does: indexed by the *source* part, coordinates quantised to 1/255 first.

The part pairings are DensePose's (``DensePoseTransformData``): the 24 fine parts swap left and
right (1 and 2, the torso back / front, map to themselves), and the 14 coarse ``dp_masks``
parts likewise. The official ``.mat`` file carries only the UV maps; a file written by
:func:`write_uv_symmetry_mat` also stores the 1-based fine-part pairing as
``Index_Symmetry_List`` (1, 24), which :func:`load_uv_symmetry_mat` reads when present.

Geometry: a point's box-relative ``x`` becomes ``256 - x`` (the original's convention, the
mirror of a point in a box of width 256) and the coarse map's columns are reversed (pixel
column ``c`` -> ``255 - c``: the same mirror for pixel centres).

:func:`synthetic_uv_symmetry` is the table of d2ext's synthetic figures
(``d2ext.data.synthetic.densepose_figures``), whose charts have U along each part's axis and V
across it, increasing towards the person's left: mirroring keeps U and reverses V, so
``U' = u_loc / 255`` and ``V' = 1 - v_loc / 255`` for every part.
"""

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from detectron2.data import MetadataCatalog

from d2ext.structures import DensePoseData

__all__ = [
    "MASK_LABEL_SYMMETRIES",
    "POINT_LABEL_SYMMETRIES",
    "SYNTHETIC_UV_SYMMETRY",
    "UVSymmetryTable",
    "flip_iuv",
    "flip_segm",
    "hflip_densepose_data",
    "load_uv_symmetry",
    "load_uv_symmetry_of_datasets",
    "load_uv_symmetry_mat",
    "synthetic_uv_symmetry",
    "write_uv_symmetry_mat",
]

NUM_PARTS = 24  # fine parts (point labels 1..24)
NUM_COARSE_PARTS = 14  # dp_masks parts (1..14)
TABLE_SIZE = 256
# DensePose's mirror part of each fine part label (index = label, 0 = background)
POINT_LABEL_SYMMETRIES = (0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23)  # fmt: skip
# ... and of each coarse dp_masks part
MASK_LABEL_SYMMETRIES = (0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14)
# ``densepose_transform_src`` value selecting the synthetic figures' table
SYNTHETIC_UV_SYMMETRY = "builtin:synthetic_charts"


@dataclass(frozen=True)
class UVSymmetryTable:
    """point_label_symmetries (25,) int64 (mirror label of labels 0..24), mask_label_symmetries
    (15,) int64 (coarse parts 0..14), u_transforms / v_transforms (24, 256, 256) float32,
    indexed [part - 1, v_loc, u_loc]."""

    point_label_symmetries: torch.Tensor
    mask_label_symmetries: torch.Tensor
    u_transforms: torch.Tensor
    v_transforms: torch.Tensor

    def __post_init__(self):
        shape = (NUM_PARTS, TABLE_SIZE, TABLE_SIZE)
        for name in ("u_transforms", "v_transforms"):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"UVSymmetryTable: {name} must be {shape}, "
                    f"got {tuple(getattr(self, name).shape)}"
                )
        for name, n in (("point_label_symmetries", 25), ("mask_label_symmetries", 15)):
            sym = getattr(self, name)
            if tuple(sym.shape) != (n,) or sorted(sym.tolist()) != list(range(n)):
                raise ValueError(
                    f"UVSymmetryTable: {name} must permute 0..{n - 1}, got {sym.tolist()}"
                )


def _table(u: np.ndarray, v: np.ndarray, point_sym=POINT_LABEL_SYMMETRIES) -> UVSymmetryTable:
    return UVSymmetryTable(
        torch.as_tensor(np.asarray(point_sym), dtype=torch.int64),
        torch.as_tensor(MASK_LABEL_SYMMETRIES, dtype=torch.int64),
        torch.from_numpy(np.array(u, dtype=np.float32)),
        torch.from_numpy(np.array(v, dtype=np.float32)),
    )


def synthetic_uv_symmetry() -> UVSymmetryTable:
    """The synthetic figures' table: DensePose's part pairing, U kept, V reversed."""
    grid = np.arange(TABLE_SIZE, dtype=np.float64) / 255.0
    u = np.broadcast_to(grid[None, None, :], (NUM_PARTS, TABLE_SIZE, TABLE_SIZE))
    v = np.broadcast_to(1.0 - grid[None, :, None], (NUM_PARTS, TABLE_SIZE, TABLE_SIZE))
    return _table(u, v)


def load_uv_symmetry_mat(path: str) -> UVSymmetryTable:
    """A table from a ``UV_symmetry_transforms.mat`` (``U_transforms``, ``V_transforms``: (1, 24)
    cells of 256 x 256; optional ``Index_Symmetry_List`` (1, 24), 1-based)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"UV symmetry file {path!r}: not a readable .mat file ({e})") from None
    maps = {}
    for key in ("U_transforms", "V_transforms"):
        if key not in mat:
            keys = sorted(k for k in mat if not k.startswith("__"))
            raise ValueError(f"UV symmetry file {path!r}: no {key!r} (keys: {keys})")
    for key in ("U_transforms", "V_transforms"):
        cells = mat[key]
        if cells.shape != (1, NUM_PARTS):
            raise ValueError(
                f"UV symmetry file {path!r}: {key} must be a (1, {NUM_PARTS}) cell array, "
                f"got shape {cells.shape}"
            )
        parts = [np.asarray(cells[0, i], dtype=np.float64) for i in range(NUM_PARTS)]
        for i, p in enumerate(parts):
            if p.shape != (TABLE_SIZE, TABLE_SIZE):
                raise ValueError(
                    f"UV symmetry file {path!r}: {key}{{{i + 1}}} is {p.shape}, "
                    f"expected ({TABLE_SIZE}, {TABLE_SIZE})"
                )
        maps[key] = np.stack(parts)
    point_sym = POINT_LABEL_SYMMETRIES
    if "Index_Symmetry_List" in mat:
        listed = np.asarray(mat["Index_Symmetry_List"]).reshape(-1).astype(np.int64)
        if len(listed) != NUM_PARTS:
            raise ValueError(
                f"UV symmetry file {path!r}: Index_Symmetry_List has {len(listed)} entries, "
                f"expected {NUM_PARTS}"
            )
        point_sym = (0, *listed.tolist())
    try:
        return _table(maps["U_transforms"], maps["V_transforms"], point_sym)
    except ValueError as e:
        raise ValueError(f"UV symmetry file {path!r}: {e}") from None


def write_uv_symmetry_mat(path: str, table: UVSymmetryTable) -> None:
    """Write ``table`` in the ``UV_symmetry_transforms.mat`` layout (plus
    ``Index_Symmetry_List``)."""
    import scipy.io

    def cells(maps: torch.Tensor) -> np.ndarray:
        out = np.empty((1, NUM_PARTS), dtype=object)
        for i in range(NUM_PARTS):
            out[0, i] = maps[i].double().numpy()
        return out

    scipy.io.savemat(
        path,
        {
            "U_transforms": cells(table.u_transforms),
            "V_transforms": cells(table.v_transforms),
            "Index_Symmetry_List": table.point_label_symmetries[1:].double().numpy()[None],
        },
    )


def load_uv_symmetry(src: Optional[str]) -> Optional[UVSymmetryTable]:
    """The table named by a dataset's ``densepose_transform_src``: a ``.mat`` path, or
    :data:`SYNTHETIC_UV_SYMMETRY` for the synthetic figures' table; None for None (no table:
    the mapper then refuses to mirror, as the original, instead of guessing one)."""
    if src is None:
        return None
    if src == SYNTHETIC_UV_SYMMETRY:
        return synthetic_uv_symmetry()
    if not os.path.isfile(src):
        raise FileNotFoundError(f"densepose_transform_src: UV symmetry file {src!r} does not exist")
    return load_uv_symmetry_mat(src)


def load_uv_symmetry_of_datasets(
    dataset_names: Union[str, Sequence[str]],
) -> Optional[UVSymmetryTable]:
    """The one table of the datasets' ``densepose_transform_src`` metadata (None where it is
    unset), as D2's ``create_keypoint_hflip_indices`` reads the flip map: one mapper
    flips them all, so they must agree."""
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    sources = {MetadataCatalog.get(n).get("densepose_transform_src", None) for n in names}
    if len(sources) > 1:
        raise ValueError(
            f"DensePoseMapper: datasets {names} have different densepose_transform_src "
            f"{sorted(map(str, sources))}; one symmetry table must serve them all"
        )
    return load_uv_symmetry(sources.pop() if sources else None)


def flip_iuv(i: torch.Tensor, u: torch.Tensor, v: torch.Tensor, table: UVSymmetryTable):
    """Mirror part labels and chart coordinates of points (all (P,)); returns (i', u', v').
    Background points (i = 0) keep their u, v."""
    i = i.long()
    fg = i > 0
    if ((i < 0) | (i > NUM_PARTS)).any():
        raise ValueError(
            f"flip_iuv: part labels must be in 0..{NUM_PARTS}, got {i.unique().tolist()}"
        )
    part = (i[fg] - 1).clamp(min=0)
    # the original's lookup: (coord * 255).long(), indexed by the source part
    u_loc = (u[fg] * 255).long().clamp(0, TABLE_SIZE - 1)
    v_loc = (v[fg] * 255).long().clamp(0, TABLE_SIZE - 1)
    u_new, v_new = u.clone(), v.clone()
    u_new[fg] = table.u_transforms[part, v_loc, u_loc].to(u.dtype)
    v_new[fg] = table.v_transforms[part, v_loc, u_loc].to(v.dtype)
    return table.point_label_symmetries[i].to(i.dtype), u_new, v_new


def flip_segm(segm: torch.Tensor, table: UVSymmetryTable) -> torch.Tensor:
    """(256, 256) coarse part map mirrored left-right, parts swapped."""
    return table.mask_label_symmetries[torch.flip(segm, [1]).long()].to(segm.dtype)


def hflip_densepose_data(data: DensePoseData, table: UVSymmetryTable) -> DensePoseData:
    """The annotation of the mirrored person in the mirrored box: ``x -> 256 - x``, labels and
    UV through ``table``, the coarse map flipped."""
    i, u, v = flip_iuv(data.i, data.u, data.v, table)
    segm = None if data.segm is None else flip_segm(data.segm, table)
    return DensePoseData(256.0 - data.x, data.y.clone(), i, u, v, segm)
