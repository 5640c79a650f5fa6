"""Keypoint metadata of the 68-point iBUG / 300-W face markup, in D2's metadata format.

Point order is iBUG's (1-based numbers in its annotation guide; index = number - 1 here):
jaw 1-17, right brow 18-22, left brow 23-27, nose bridge 28-31, nose bottom 32-36, right eye
37-42, left eye 43-48, outer lip 49-60, inner lip 61-68. "Right" and "left" are the *subject's*
(as in the guide and in COCO's person keypoints): in a frontal face the subject's right is on the
image left, so point 1 (``jaw_right_1``) and point 37 (``right_eye_outer_corner``) are the
leftmost points of their parts in the image.

Names are chosen so that the mirror of a point is its name with "right" and "left" swapped;
:data:`IBUG_68_FLIP_MAP` is derived that way and is the standard 68-point mirror table (1<->17,
..., 8<->10, 18<->27, ..., 22<->23, 32<->36, 33<->35, 37<->46, 38<->45, 39<->44, 40<->43,
41<->48, 42<->47, 49<->55, 50<->54, 51<->53, 56<->60, 57<->59, 61<->65, 62<->64, 66<->68; points
9, 28-31, 34, 52, 58, 63 and 67 are their own mirror).
"""

from typing import Dict, List, Tuple

__all__ = [
    "IBUG_68_KEYPOINT_NAMES",
    "IBUG_68_FLIP_MAP",
    "IBUG_68_CONNECTION_RULES",
    "IBUG_68_INTEROCULAR",
    "ibug68_metadata",
]

IBUG_68_KEYPOINT_NAMES: Tuple[str, ...] = (
    # 1-17: jaw, from the subject's right ear (numbered 1..8 from the ear) over the chin (9)
    *(f"jaw_right_{k}" for k in range(1, 9)),
    "chin",
    *(f"jaw_left_{k}" for k in range(8, 0, -1)),
    # 18-22 right brow, 23-27 left brow: outer -> inner -> outer
    "right_brow_outer",
    "right_brow_outer_mid",
    "right_brow_center",
    "right_brow_inner_mid",
    "right_brow_inner",
    "left_brow_inner",
    "left_brow_inner_mid",
    "left_brow_center",
    "left_brow_outer_mid",
    "left_brow_outer",
    # 28-31 nose bridge, top to tip; 32-36 nose bottom, right to left
    "nose_bridge_top",
    "nose_bridge_upper",
    "nose_bridge_lower",
    "nose_tip",
    "nose_bottom_right_outer",
    "nose_bottom_right_inner",
    "nose_bottom_center",
    "nose_bottom_left_inner",
    "nose_bottom_left_outer",
    # 37-42 right eye, 43-48 left eye: clockwise in the image from the leftmost corner
    "right_eye_outer_corner",
    "right_eye_upper_outer",
    "right_eye_upper_inner",
    "right_eye_inner_corner",
    "right_eye_lower_inner",
    "right_eye_lower_outer",
    "left_eye_inner_corner",
    "left_eye_upper_inner",
    "left_eye_upper_outer",
    "left_eye_outer_corner",
    "left_eye_lower_outer",
    "left_eye_lower_inner",
    # 49-60 outer lip, 61-68 inner lip: clockwise in the image from the right mouth corner
    "outer_lip_right_corner",
    "outer_lip_upper_right_outer",
    "outer_lip_upper_right_inner",
    "outer_lip_upper_center",
    "outer_lip_upper_left_inner",
    "outer_lip_upper_left_outer",
    "outer_lip_left_corner",
    "outer_lip_lower_left_outer",
    "outer_lip_lower_left_inner",
    "outer_lip_lower_center",
    "outer_lip_lower_right_inner",
    "outer_lip_lower_right_outer",
    "inner_lip_right_corner",
    "inner_lip_upper_right",
    "inner_lip_upper_center",
    "inner_lip_upper_left",
    "inner_lip_left_corner",
    "inner_lip_lower_left",
    "inner_lip_lower_center",
    "inner_lip_lower_right",
)
assert len(IBUG_68_KEYPOINT_NAMES) == len(set(IBUG_68_KEYPOINT_NAMES)) == 68


def _mirror(name: str) -> str:
    return name.replace("right", "\0").replace("left", "right").replace("\0", "left")


# (name_a, name_b) pairs as D2's COCO_PERSON_KEYPOINT_FLIP_MAP; self-mirrored points are absent
IBUG_68_FLIP_MAP: Tuple[Tuple[str, str], ...] = tuple(
    (n, _mirror(n)) for n in IBUG_68_KEYPOINT_NAMES if "right" in n
)
assert all(b in IBUG_68_KEYPOINT_NAMES for _, b in IBUG_68_FLIP_MAP)

# outer eye corners, 1-based points 37 and 46: the normaliser of the 300-W NME
IBUG_68_INTEROCULAR: Tuple[str, str] = (IBUG_68_KEYPOINT_NAMES[36], IBUG_68_KEYPOINT_NAMES[45])


def _chain(first: int, last: int, color, closed: bool = False) -> List[Tuple[str, str, tuple]]:
    """Lines between consecutive 1-based points ``first..last`` (and back if ``closed``)."""
    idx = list(range(first, last + 1)) + ([first] if closed else [])
    n = IBUG_68_KEYPOINT_NAMES
    return [(n[a - 1], n[b - 1], color) for a, b in zip(idx[:-1], idx[1:])]


# D2 Visualizer format (name_a, name_b, (r, g, b)); the contours dlib's face renderer draws
IBUG_68_CONNECTION_RULES: Tuple[Tuple[str, str, Tuple[int, int, int]], ...] = tuple(
    _chain(1, 17, (255, 255, 0))
    + _chain(18, 22, (255, 128, 0))
    + _chain(23, 27, (255, 128, 0))
    + _chain(28, 31, (0, 255, 255))
    # nose tip -> nose bottom -> nose tip: the bottom of the nose as a closed outline
    + _chain(31, 36, (0, 255, 255))
    + [(IBUG_68_KEYPOINT_NAMES[35], IBUG_68_KEYPOINT_NAMES[30], (0, 255, 255))]
    + _chain(37, 42, (0, 255, 0), closed=True)
    + _chain(43, 48, (0, 255, 0), closed=True)
    + _chain(49, 60, (255, 0, 255), closed=True)
    + _chain(61, 68, (255, 0, 128), closed=True)
)


def ibug68_metadata() -> Dict:
    """D2 metadata of a 68-point face landmark dataset (one thing class, "face"), for
    ``MetadataCatalog.get(name).set(**ibug68_metadata(), image_root=...)``."""
    return {
        "thing_classes": ["face"],
        "keypoint_names": list(IBUG_68_KEYPOINT_NAMES),
        "keypoint_flip_map": list(IBUG_68_FLIP_MAP),
        "keypoint_connection_rules": list(IBUG_68_CONNECTION_RULES),
        "interocular_keypoints": IBUG_68_INTEROCULAR,
        "evaluator_type": "landmark",
    }
