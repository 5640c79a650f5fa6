"""Landmark coding relative to an anchor (RetinaFace, Deng et al., CVPR 2020): each point is
stored as its offset from the anchor centre divided by ``anchor size / weight``, with no log
and no clamp (biubug6/Pytorch_Retinaface ``encode_landm`` / ``decode_landm`` with variance 0.1,
i.e. ``weight = 10``). The box counterpart is D2's :class:`Box2BoxTransform`."""

import torch

__all__ = ["Landmark2AnchorTransform"]


class Landmark2AnchorTransform:
    """``deltas[..., 2k] = weight * (x_k - cx) / w``, ``deltas[..., 2k + 1] = weight * (y_k - cy)
    / h`` for anchors ``(cx, cy, w, h)`` given as XYXY boxes."""

    def __init__(self, weight: float = 10.0):
        if not weight > 0:
            raise ValueError(f"Landmark2AnchorTransform: weight must be > 0, got {weight}")
        self.weight = float(weight)

    @staticmethod
    def _centres_sizes(anchors: torch.Tensor):
        wh = anchors[..., 2:] - anchors[..., :2]
        return anchors[..., :2] + 0.5 * wh, wh

    def get_deltas(self, anchors: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """anchors (R, 4) XYXY; landmarks (R, K, 2) pixels -> deltas (R, 2K)."""
        if (
            landmarks.dim() != 3
            or landmarks.shape[-1] != 2
            or landmarks.shape[0] != anchors.shape[0]
        ):
            raise ValueError(
                f"get_deltas: landmarks must be (R, K, 2) for {anchors.shape[0]} anchors, "
                f"got {tuple(landmarks.shape)}"
            )
        ctr, wh = self._centres_sizes(anchors)
        deltas = (landmarks - ctr[:, None]) * self.weight / wh[:, None]
        return deltas.reshape(landmarks.shape[0], 2 * landmarks.shape[1])

    def apply_deltas(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """deltas (..., 2K), anchors (..., 4) XYXY (broadcastable) -> landmarks (..., K, 2)."""
        if deltas.shape[-1] % 2:
            raise ValueError(f"apply_deltas: last dim must be 2K, got {deltas.shape[-1]}")
        ctr, wh = self._centres_sizes(anchors)
        d = deltas.reshape(*deltas.shape[:-1], deltas.shape[-1] // 2, 2)  # (..., K, 2), K >= 0
        # (delta * variance) * size, in the original's order of operations
        return ctr[..., None, :] + d * (1.0 / self.weight) * wh[..., None, :]
