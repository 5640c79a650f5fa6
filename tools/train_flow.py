#!/usr/bin/env python
"""Train d2ext's RAFT-small (:class:`d2ext.modeling.common.RAFTFlow`, torchvision's
``raft_small``) from scratch on the exact flow of a Cityscapes-VPS-layout dataset, for
``MODEL.VPSNET.FLOW_WEIGHTS`` (no pretrained flow net can be downloaded here).

Pairs: every annotated frame with its next and previous annotated frame of the same video, with
the exact flow ``<flow_root>/<image id>.npy`` / ``<flow_prev_root>/<image id>.npy`` of the
dataset's metadata (float32 (H, W, 2), x then y in pixels, from the frame to its neighbour), as
``d2ext.data.synthetic.panoptic_videos`` writes and registers them. That is the reference distance VPSNet trains its fuse
with (``VPSNetPairMapper``: +-1 annotated frame).

Recipe: RAFT's (Teed & Deng, ``train.py``): AdamW, weight decay 1e-4, one-cycle learning rate
(5 % warm-up, linear decay), gradient-norm clipping at 1, sequence loss over the refinement
steps with weights ``gamma ** (N - i - 1)`` (``gamma`` 0.8) on the L1 flow error; random
horizontal flips (the flow's x negated) as the only augmentation. It reports the mean end-point
error on ``--eval-dataset`` before and after training and for zero flow.

    python tools/train_flow.py --dataset synth_vps_train --eval-dataset synth_vps_val \\
        --iters 1500 --output output/raft_small_synth_vps
"""

import argparse
import json
import logging
import os
import sys
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

import d2ext  # noqa: F401  (registers the synthetic datasets)
from d2ext.modeling.common import RAFTFlow
from d2ext.modeling.common.warp import endpoint_error

logger = logging.getLogger("d2ext.train_flow")

FlowPair = Tuple[np.ndarray, np.ndarray, np.ndarray]  # image1 (H, W, 3), image2, flow (H, W, 2)


def flow_file(dataset_name: str, image_id: str, direction: str) -> str:
    """The exact-flow file of annotated frame ``image_id`` to its ``direction`` ("next" or
    "prev") neighbour: ``<flow_root or flow_prev_root>/<image id>.npy``, the folders the
    dataset's metadata names (the synthetic panoptic videos register them)."""
    key = {"next": "flow_root", "prev": "flow_prev_root"}[direction]
    root = MetadataCatalog.get(dataset_name).get(key, None)
    if not root:
        raise ValueError(
            f"{dataset_name}: its metadata has no {key!r}; train_flow.py wants a Cityscapes-VPS "
            "dataset registered with the folders of its exact flow (flow_root, flow_prev_root)"
        )
    return os.path.join(root, f"{image_id}.npy")


def load_flow_pairs(dataset_name: str) -> List[FlowPair]:
    """Every (frame, neighbouring annotated frame, exact flow) pair of a registered
    Cityscapes-VPS-format dataset (dicts with ``video_id`` / ``frame_idx``, as
    :func:`d2ext.data.cityscapes_vps.load_cityscapes_vps` gives)."""
    dicts = DatasetCatalog.get(dataset_name)
    by_video: Dict[str, Dict[int, Dict]] = {}
    for d in dicts:
        if "video_id" not in d or "frame_idx" not in d:
            raise ValueError(
                f"{dataset_name}: {d.get('file_name')} has no video_id / frame_idx; "
                "train_flow.py wants a Cityscapes-VPS-format dataset (format cityscapes_vps)"
            )
        by_video.setdefault(d["video_id"], {})[d["frame_idx"]] = d
    pairs: List[FlowPair] = []
    for video_id, frames in sorted(by_video.items()):
        for idx, d in sorted(frames.items()):
            for direction, step in (("next", 1), ("prev", -1)):
                other = frames.get(idx + step)
                if other is None:
                    continue
                path = flow_file(dataset_name, d["image_id"], direction)
                if not os.path.isfile(path):
                    raise FileNotFoundError(
                        f"{dataset_name}: no {direction} flow for {d['image_id']} (video "
                        f"{video_id}): {path} is missing"
                    )
                image1 = read_image(d["file_name"], format="BGR")
                image2 = read_image(other["file_name"], format="BGR")
                flow = np.load(path)
                if image1.shape != image2.shape or flow.shape != image1.shape[:2] + (2,):
                    raise ValueError(
                        f"{dataset_name}: {d['image_id']} -> {other['image_id']}: image sizes "
                        f"{image1.shape[:2]} / {image2.shape[:2]} and flow {flow.shape} differ"
                    )
                pairs.append((image1, image2, flow.astype(np.float32)))
    if not pairs:
        raise ValueError(f"{dataset_name}: no pair of annotated frames with flow")
    return pairs


def _to_batch(pairs: Sequence[FlowPair], flips: Sequence[bool]):
    im1, im2, flows = [], [], []
    for (a, b, f), flip in zip(pairs, flips):
        a, b, f = (torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1) for x in (a, b, f))
        if flip:  # mirror both frames; the flow's x component changes sign
            a, b, f = a.flip(-1), b.flip(-1), f.flip(-1) * torch.tensor([-1.0, 1.0])[:, None, None]
        im1.append(a.float())
        im2.append(b.float())
        flows.append(f.float())
    return torch.stack(im1), torch.stack(im2), torch.stack(flows)


def sequence_loss(preds: Sequence[torch.Tensor], gt: torch.Tensor, gamma: float = 0.8):
    """RAFT's loss: ``sum_i gamma ** (N - i - 1) * mean |pred_i - gt|`` over the steps."""
    n = len(preds)
    return sum(gamma ** (n - i - 1) * (p - gt).abs().mean() for i, p in enumerate(preds))


@torch.no_grad()
def evaluate_epe(model: RAFTFlow, pairs: Sequence[FlowPair], batch_size: int = 8) -> Dict:
    """Mean end-point error (pixels) of ``model`` and of zero flow over ``pairs``."""
    model.eval()
    epe, zero, n = 0.0, 0.0, 0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        im1, im2, gt = _to_batch(chunk, [False] * len(chunk))
        pred = model(im1, im2)
        epe += endpoint_error(pred, gt).item() * len(chunk)
        zero += endpoint_error(torch.zeros_like(gt), gt).item() * len(chunk)
        n += len(chunk)
    return {"epe": epe / n, "zero_flow_epe": zero / n, "num_pairs": n}


def train(
    model: RAFTFlow,
    pairs: Sequence[FlowPair],
    *,
    iters: int,
    batch_size: int = 4,
    lr: float = 4e-4,
    weight_decay: float = 1e-4,
    gamma: float = 0.8,
    seed: int = 0,
    log_period: int = 20,
) -> List[float]:
    """RAFT's training loop (module doc) on ``pairs``; returns the loss of every iteration."""
    rng = np.random.default_rng(seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=1e-8)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        lr,
        total_steps=iters + 100,  # RAFT's train.py: the decay never reaches 0
        pct_start=0.05,
        cycle_momentum=False,
        anneal_strategy="linear",
    )
    losses: List[float] = []
    start = time.perf_counter()
    for it in range(iters):
        idx = rng.choice(len(pairs), size=min(batch_size, len(pairs)), replace=False)
        im1, im2, gt = _to_batch([pairs[i] for i in idx], rng.random(len(idx)) < 0.5)
        loss = sequence_loss(model(im1, im2, return_all=True), gt, gamma)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train_flow: loss became {loss.item()} at iteration {it}")
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if log_period and ((it + 1) % log_period == 0 or it + 1 == iters):
            recent = float(np.mean(losses[-log_period:]))
            logger.info(
                f"iter {it + 1}/{iters}  loss {recent:.4f}  lr {scheduler.get_last_lr()[0]:.2e}  "
                f"{(time.perf_counter() - start) / (it + 1):.2f} s/iter"
            )
    return losses


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="synth_vps_train", help="Cityscapes-VPS-format dataset")
    p.add_argument("--eval-dataset", default="synth_vps_val", help="'' to skip evaluation")
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--num-flow-updates", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="output/raft_small_synth_vps")
    return p


def main(args) -> Dict:
    os.makedirs(args.output, exist_ok=True)
    setup_logger(os.path.join(args.output, "log.txt"), name="d2ext")
    torch.manual_seed(args.seed)
    model = RAFTFlow(input_format="BGR", num_flow_updates=args.num_flow_updates)
    pairs = load_flow_pairs(args.dataset)
    logger.info(f"{args.dataset}: {len(pairs)} frame pairs with exact flow")
    eval_pairs = load_flow_pairs(args.eval_dataset) if args.eval_dataset else None
    results: Dict = {"dataset": args.dataset, "iters": args.iters}
    if eval_pairs is not None:
        results["before"] = evaluate_epe(model, eval_pairs)
        logger.info(f"{args.eval_dataset} before training: {results['before']}")
    losses = train(
        model, pairs, iters=args.iters, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    results["final_loss"] = float(np.mean(losses[-20:]))
    path = os.path.join(args.output, "model_final.pth")
    torch.save(model.state_dict(), path)
    logger.info(f"saved {path} (MODEL.VPSNET.FLOW_WEIGHTS)")
    if eval_pairs is not None:
        results["after"] = evaluate_epe(model, eval_pairs)
        logger.info(f"{args.eval_dataset} after training: {results['after']}")
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main(get_parser().parse_args(sys.argv[1:]))
