"""VPSNet: video inference against per-frame UPSNet, and our VPQ against the official script.

``vpsnet_video``: VPSNet R-18 FPN (``configs/VPSNet/vpsnet_R_18_synth.yaml`` with
``MODEL.VPSNET.FLOW_NET raft``: RAFT-small, 12 updates) on consecutive raw frames of one
synthetic panoptic video (``render_panoptic_video`` of ``synth_vps_val``'s seed, video 0, 128 x
256 BGR), fed as :class:`d2ext.engine.VideoPredictor` feeds a stateful model: one
``forward_video`` call per frame on the video's state (the previous frame is the reference, the
first frame its own). Anchor: d2ext's ``UPSNet`` (``configs/UPSNet/upsnet_R_18_synth.yaml``)
frame by frame, ``model([frame])``, with VPSNet's weights (its state dict, strict=False; the
anchor's output also holds the stock Mask R-CNN detections, VPSNet's only the panoptic ones).
Row 1: VPSNet with fuse + track; row 2: track only (``FUSE_ON False``: no flow, no fuse). Time
per frame, the speed-up column is UPSNet's time / VPSNet's (below 1: VPSNet is slower). No
target: the issue asks for the time only. Extra: the share of VPSNet's time spent in RAFT and
in the Fuse module (each call timed by forward hooks in the timed runs).

Weights: seeded random unless ``D2EXT_BENCH_VPSNET_WEIGHTS`` names a trained VPSNet checkpoint
(and ``D2EXT_BENCH_RAFT_WEIGHTS`` a RAFT-small one, given as ``MODEL.VPSNET.FLOW_WEIGHTS`` and
loaded again after the checkpoint, so it wins over the checkpoint's ``flow_net.*``). Random
class scores are all about 1/7, under UPSNet's panoptic score threshold (0.6): with random
weights both models keep detections from 0.05 up and at most ``RANDOM_DETECTIONS`` per frame
(about the objects of a synthetic frame), so the track head and the panoptic head do real work.

Before timing, the track-only VPSNet must give UPSNet's semantic and panoptic category maps
bit for bit on two frames (the weights really are the same).

``vpq_eval``: :func:`d2ext.evaluation.vpq_compute` against the official ``tools/eval_vpq.py``
of mcahny/vps (commit 138503e) on one Cityscapes-VPS-layout submission: the gt of a synthetic
panoptic video dataset and a deterministic perturbed copy of it (segment boundaries eroded, things
dropped or relabelled in some frames, one ID switch per video, VOID predicted as the frame's
largest stuff). The script is not in this repository: ``D2EXT_BENCH_OFFICIAL_EVAL_VPQ`` names it
(the case raises without it). It runs as a user runs it, ``python eval_vpq.py --submit_dir
--truth_dir --pan_gt_json_file`` in a subprocess; with numpy >= 1.24 its
``np.array_split(<list of tuples>)`` raises (ragged arrays), so a ``python -c`` wrapper first
makes ``np.array_split`` turn a list into the object array numpy < 1.24 made, then runs the
script unchanged (``runpy``). Ours runs in this process. Before timing the four per-k VPQ
triples it prints must equal ours to 1e-9. Row 1: the subprocess's wall time (interpreter start
and imports included); row 2: the time the script reports itself (``==> All``, after its
imports).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from d2ext.config import add_d2ext_config

from . import BenchRow, register_benchmark, time_fn

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VPSNET_CONFIG = "VPSNet/vpsnet_R_18_synth.yaml"
UPSNET_CONFIG = "UPSNet/upsnet_R_18_synth.yaml"
WEIGHTS_ENV = "D2EXT_BENCH_VPSNET_WEIGHTS"
RAFT_WEIGHTS_ENV = "D2EXT_BENCH_RAFT_WEIGHTS"
OFFICIAL_ENV = "D2EXT_BENCH_OFFICIAL_EVAL_VPQ"
VIDEO_SEED, VIDEO_INDEX, HEIGHT, WIDTH = 82, 0, 128, 256  # synth_vps_val's seed and frame size
RANDOM_DETECTIONS = 8
GROUPS = ("All", "Things", "Stuff")


# ---- vpsnet_video -----------------------------------------------------------------------------


def _cfg(config: str, device: str, random_weights: bool):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(_REPO, "configs", config))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    if random_weights:  # module doc: random scores sit under the 0.6 threshold
        cfg.MODEL.UPSNET.PANOPTIC.SCORE_THRESH = 0.05
        cfg.TEST.DETECTIONS_PER_IMAGE = RANDOM_DETECTIONS
    return cfg


def _copy_weights(dst: torch.nn.Module, src: torch.nn.Module, extra: Tuple[str, ...], what: str):
    """``src``'s state dict into ``dst`` (strict=False); only ``extra`` modules may be left over."""
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    left = [k for k in unexpected if not k.startswith(extra)]
    if missing or left:
        raise AssertionError(f"VPSNet -> {what} weights: missing {missing}, unexpected {left}")


def _models(device: str):
    """(VPSNet fuse + track, VPSNet track only, UPSNet) in eval mode with one set of weights,
    and a description of the weights."""
    weights, raft = os.environ.get(WEIGHTS_ENV, ""), os.environ.get(RAFT_WEIGHTS_ENV, "")
    cfg = _cfg(VPSNET_CONFIG, device, random_weights=not weights)
    cfg.MODEL.VPSNET.FLOW_NET = "raft"
    cfg.MODEL.VPSNET.FLOW_WEIGHTS = raft
    torch.manual_seed(0)
    full = build_model(cfg).eval()
    if weights:
        DetectionCheckpointer(full).load(weights)
        if raft:
            from d2ext.modeling.common import load_flow_weights

            load_flow_weights(full.flow_net, raft)
    track_cfg = cfg.clone()
    track_cfg.MODEL.VPSNET.FUSE_ON = False
    track = build_model(track_cfg).eval()
    _copy_weights(track, full, ("fuse.", "flow_net."), "track-only VPSNet")
    upsnet = build_model(_cfg(UPSNET_CONFIG, device, random_weights=not weights)).eval()
    _copy_weights(upsnet, full, ("fuse.", "flow_net.", "track_head."), "UPSNet")
    described = os.path.basename(weights) if weights else "random (seed 0)"
    if raft:
        described += f", RAFT {os.path.basename(raft)}"
    return full, track, upsnet, described


def _frames(num: int) -> List[Dict]:
    """The first ``num`` raw frames of the video as D2 inputs: (3, H, W) float BGR images."""
    from d2ext.data.synthetic import render_panoptic_video

    video = render_panoptic_video(VIDEO_SEED, VIDEO_INDEX, HEIGHT, WIDTH, max_objects=6)
    if num > len(video.frames):
        raise ValueError(f"vpsnet_video: {num} frames asked, the video has {len(video.frames)}")
    bgr = video.frames[:num, :, :, ::-1].transpose(0, 3, 1, 2)
    images = [torch.from_numpy(np.ascontiguousarray(f)).float() for f in bgr]
    return [
        {"image": im, "height": HEIGHT, "width": WIDTH, "frame_idx": t}
        for t, im in enumerate(images)
    ]


def _category_map(panoptic_seg) -> torch.Tensor:
    """(H, W) category of each pixel (things offset by 1000), -1 where unlabelled."""
    ids, segments = panoptic_seg
    out = torch.full_like(ids, -1)
    for s in segments:
        out[ids == s["id"]] = s["category_id"] + (1000 if s["isthing"] else 0)
    return out


def _check_same_weights(track, upsnet, inputs: List[Dict]) -> None:
    state = track.init_video_state()
    for t, x in enumerate(inputs[:2]):
        (ours,), state = track.forward_video([x], state)
        ref = upsnet([x])[0]
        if not torch.equal(ours["sem_seg"], ref["sem_seg"]):
            raise AssertionError(f"frame {t}: track-only VPSNet and UPSNet sem_seg differ")
        if not torch.equal(_category_map(ours["panoptic_seg"]), _category_map(ref["panoptic_seg"])):
            raise AssertionError(f"frame {t}: track-only VPSNet and UPSNet panoptic maps differ")


class _CallTimer:
    """Seconds spent in ``module``'s forward calls since the last :meth:`reset` (CUDA
    synchronised around each call)."""

    def __init__(self, module: torch.nn.Module, device: str):
        self._sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
        self.total, self._t0 = 0.0, 0.0
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _start(self, *_):
        self._sync()
        self._t0 = time.perf_counter()

    def _stop(self, *_):
        self._sync()
        self.total += time.perf_counter() - self._t0

    def reset(self) -> None:
        self.total = 0.0


def _share(part: Sequence[float], whole: Sequence[float]) -> str:
    """``part``'s share of ``whole`` over all rounds, and its median ms/frame."""
    return f"{100 * sum(part) / sum(whole):.0f}% ({1e3 * np.median(part):.0f} ms)"


@register_benchmark("vpsnet_video")
def bench_vpsnet_video(device: str, quick: bool) -> List[BenchRow]:
    """VPSNet R-18 (RAFT-small) per frame on a 128x256 synthetic video vs per-frame UPSNet."""
    num_frames, rounds = (3, 1) if quick else (10, 3)
    full, track, upsnet, weights = _models(device)
    inputs = _frames(num_frames)
    raft_timer, fuse_timer = _CallTimer(full.flow_net, device), _CallTimer(full.fuse, device)
    detections: List[int] = []

    def video(model, keep=None):
        def run():
            state = model.init_video_state()
            for x in inputs:  # one frame per call, as VideoPredictor feeds a stateful model
                (out,), state = model.forward_video([x], state)
                if keep is not None:
                    keep.append(len(out["instances"]))

        return run

    def per_frame():
        for x in inputs:
            upsnet([x])

    fns = {"upsnet": per_frame, "full": video(full, detections), "track": video(track)}
    times: Dict[str, List[float]] = {k: [] for k in fns}
    raft, fuse = [], []
    with torch.no_grad():
        _check_same_weights(track, upsnet, inputs)
        for fn in fns.values():  # warm-up
            fn()
        del detections[:]
        # the three take turns each round: a drifting load (the jobs on the other cores)
        # weighs on all alike
        for _ in range(rounds):
            for name, fn in fns.items():
                raft_timer.reset()
                fuse_timer.reset()
                times[name].append(time_fn(fn, warmup=0, iters=1, device=device) / num_frames)
                if name == "full":
                    raft.append(raft_timer.total / num_frames)
                    fuse.append(fuse_timer.total / num_frames)
    t = {k: float(np.median(v)) for k, v in times.items()}
    common = {
        "threads": str(torch.get_num_threads()),
        "frames": f"{num_frames} x {HEIGHT}x{WIDTH}, {rounds} rounds",
        "weights": weights,
    }
    return [
        BenchRow(
            name="VPSNet R-18 fuse + track (RAFT-small), ms/frame",
            anchor="per-frame UPSNet R-18, same weights",
            anchor_s=t["upsnet"],
            ours_s=t["full"],
            extra={
                **common,
                "fps VPSNet/UPSNet": f"{1 / t['full']:.2f}/{1 / t['upsnet']:.2f}",
                "RAFT share": _share(raft, times["full"]),
                "Fuse module share (RAFT excluded)": _share(fuse, times["full"]),
                "detections/frame": f"{np.mean(detections):.1f}",
            },
        ),
        BenchRow(
            name="VPSNet R-18 track only (FUSE_ON False), ms/frame",
            anchor="per-frame UPSNet R-18, same weights",
            anchor_s=t["upsnet"],
            ours_s=t["track"],
            extra={**common, "fps VPSNet/UPSNet": f"{1 / t['track']:.2f}/{1 / t['upsnet']:.2f}"},
        ),
    ]


# ---- vpq_eval ---------------------------------------------------------------------------------

# numpy >= 1.24 raises on the official's np.array_split(<list of (dict, dict, array, array,
# dict)>); numpy < 1.24 made an object array of it, which this does before running the script
_OFFICIAL_RUNNER = """\
import runpy, sys
import numpy as np
_array_split = np.array_split
def array_split(ary, *args, **kwargs):
    if isinstance(ary, list):
        ary = np.array(ary, dtype=object)
    return _array_split(ary, *args, **kwargs)
np.array_split = array_split
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _official_script() -> str:
    path = os.environ.get(OFFICIAL_ENV, "")
    how = (
        f"set {OFFICIAL_ENV} to the official tools/eval_vpq.py of mcahny/vps (commit 138503e), "
        f"e.g. `git clone https://github.com/mcahny/vps /tmp/vps && export "
        f"{OFFICIAL_ENV}=/tmp/vps/tools/eval_vpq.py`; it is not part of this repository"
    )
    if not path:
        raise RuntimeError(f"vpq_eval needs the official VPQ script: {how}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vpq_eval: {OFFICIAL_ENV}={path!r} is no file; {how}")
    return path


def _boundary(ids: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels with a 4-neighbour of another id."""
    edge = np.zeros(ids.shape, bool)
    dy, dx = ids[1:] != ids[:-1], ids[:, 1:] != ids[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def _perturbed_video(gt: List[np.ndarray], segments: List[List[dict]], things: List[int], rng):
    """Predictions for one video's annotated frames: ids renamed once per video (one thing
    renamed again from frame 3 on: an ID switch), segment boundaries eroded to unlabelled, each
    thing dropped (p 0.1) or relabelled (p 0.05) per frame, VOID as the largest stuff."""
    cats = {s["id"]: (s["category_id"], s["category_id"] in things) for f in segments for s in f}
    ids = sorted(cats)
    fresh = [int(i) for i in rng.choice((1 << 24) - 1, len(ids) + 1, replace=False) + 1]
    new, switch_id = dict(zip(ids, fresh)), fresh[-1]
    movers = [i for i in ids if cats[i][1]]
    switched = movers[0] if movers else None
    preds = []
    for t, (gt_ids, segs) in enumerate(zip(gt, segments)):
        pred = np.zeros_like(gt_ids)
        stuff = [s for s in segs if not cats[s["id"]][1]]
        if stuff:
            pred[gt_ids == 0] = new[max(stuff, key=lambda s: s["area"])["id"]]
        category = {}
        edge = _boundary(gt_ids)
        for s in segs:
            sid, (cat, isthing) = s["id"], cats[s["id"]]
            region = gt_ids == sid
            pid = switch_id if sid == switched and t >= 3 else new[sid]
            region &= ~edge
            if isthing:
                if rng.random() < 0.1:
                    continue
                if rng.random() < 0.05:
                    cat = int(rng.choice(things))
            pred[region] = pid
            category[pid] = cat
        present, areas = np.unique(pred, return_counts=True)
        info = [
            {"id": int(p), "category_id": category[int(p)], "iscrowd": 0, "area": int(a)}
            for p, a in zip(present, areas)
            if p != 0
        ]
        preds.append((pred, info))
    return preds


def _write_submission(meta, submit_dir: str) -> None:
    """``pred.json`` + ``pan_pred/<image id>.png`` for every annotated frame of ``meta``'s
    dataset, in the gt json's image order (as the official pairs them)."""
    from panopticapi.utils import id2rgb
    from PIL import Image

    from d2ext.evaluation import read_panoptic_png
    from d2ext.evaluation.vpq import gt_videos

    with open(meta.panoptic_json) as f:
        gt_json = json.load(f)
    things = sorted(c["id"] for c in gt_json["categories"] if c["isthing"])
    os.makedirs(os.path.join(submit_dir, "pan_pred"))
    annotations = {}
    for v, (_, frames) in enumerate(gt_videos(gt_json, meta.panoptic_json)):
        gt = [
            read_panoptic_png(os.path.join(meta.panoptic_root, a["file_name"])) for _, a in frames
        ]
        segments = [a["segments_info"] for _, a in frames]
        preds = _perturbed_video(gt, segments, things, np.random.default_rng([7, v]))
        for (image, _), (pred, segs) in zip(frames, preds):
            name = f"{image['id']}.png"
            Image.fromarray(id2rgb(pred)).save(os.path.join(submit_dir, "pan_pred", name))
            annotations[image["id"]] = {
                "image_id": image["id"],
                "file_name": name,
                "segments_info": segs,
            }
    with open(os.path.join(submit_dir, "pred.json"), "w") as f:
        json.dump({"annotations": [annotations[im["id"]] for im in gt_json["images"]]}, f)


def _run_official(script: str, args: Sequence[str], cwd: str) -> Tuple[float, str]:
    """(wall seconds, stdout) of ``python eval_vpq.py *args`` (through the numpy shim)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _OFFICIAL_RUNNER, script, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"the official eval_vpq.py failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, proc.stdout


def _official_numbers(stdout: str) -> Tuple[Dict[int, Tuple[float, ...]], float]:
    """({k: (All, Things, Stuff)} as eval_vpq.py prints them, its own '==> All' seconds)."""
    per_k = {
        int(k): tuple(float(v) for v in vals)
        for k, *vals in re.findall(r"==> (\d+)-frame vpq_stat:.*\n(\S+) (\S+) (\S+)\n", stdout)
    }
    total = re.search(r"==> All: (\S+) sec", stdout)
    if sorted(per_k) != [0, 5, 10, 15] or total is None:
        raise ValueError(f"cannot read eval_vpq.py's output:\n{stdout}")
    return per_k, float(total.group(1))


@register_benchmark("vpq_eval")
def bench_vpq_eval(device: str, quick: bool) -> List[BenchRow]:
    """VPQ of a synthetic Cityscapes-VPS submission: official eval_vpq.py vs vpq_compute."""
    script = _official_script()
    from detectron2.data import MetadataCatalog

    from d2ext.data.synthetic import ensure_synthetic_generated
    from d2ext.evaluation import vpq_compute

    # the builtin synthetic panoptic videos (generated once under $DETECTRON2_DATASETS), here
    # only as files: 8 videos (quick) or 24, 6 annotated 128x256 frames each
    name = "synth_vps_val" if quick else "synth_vps_train"
    rounds = 1 if quick else 3
    ensure_synthetic_generated(name)
    meta = MetadataCatalog.get(name)
    with tempfile.TemporaryDirectory() as tmp:
        submit, ours_out = os.path.join(tmp, "submit"), os.path.join(tmp, "ours")
        os.makedirs(ours_out)
        _write_submission(meta, submit)
        args = ["--submit_dir", submit, "--truth_dir", meta.panoptic_root]
        args += ["--pan_gt_json_file", meta.panoptic_json]

        def ours():
            return vpq_compute(submit, meta.panoptic_root, meta.panoptic_json, output_dir=ours_out)

        res = ours()
        _, stdout = _run_official(script, args, tmp)
        official, _ = _official_numbers(stdout)
        diff = max(abs(res[k][g] - v) for k, vals in official.items() for g, v in zip(GROUPS, vals))
        if not diff <= 1e-9:
            raise AssertionError(f"vpq_compute and eval_vpq.py differ by {diff}: {res} {official}")
        wall, inner, t_ours = [], [], []
        for r in range(rounds):  # alternate which goes first
            for side in ("official", "ours") if r % 2 == 0 else ("ours", "official"):
                if side == "ours":
                    t_ours.append(time_fn(ours, warmup=0, iters=1))
                    continue
                seconds, stdout = _run_official(script, args, tmp)
                wall.append(seconds)
                inner.append(_official_numbers(stdout)[1])
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy, PIL.Image"], check=True)
        startup = time.perf_counter() - t0
    with open(meta.panoptic_json) as f:
        num_frames = len(json.load(f)["images"])
    what = f"{num_frames // 6} videos x 6 frames {HEIGHT}x{WIDTH}"
    final = res["final"]
    extra = {
        "ours": "in process",
        "VPQ All/Th/St": f"{final['All']:.2f}/{final['Things']:.2f}/{final['Stuff']:.2f}",
        "max |VPQ diff|": f"{diff:.1e}",
        "rounds": str(rounds),
    }
    return [
        BenchRow(
            name=f"VPQ k=0..15, {what}",
            anchor="official eval_vpq.py as a subprocess (numpy shim)",
            anchor_s=float(np.median(wall)),
            ours_s=float(np.median(t_ours)),
            extra={**extra, "python start + numpy/PIL import": f"{startup * 1e3:.0f} ms"},
        ),
        BenchRow(
            name=f"VPQ k=0..15, {what}",
            anchor="eval_vpq.py's own '==> All' time (after imports)",
            anchor_s=float(np.median(inner)),
            ours_s=float(np.median(t_ours)),
            extra=extra,
        ),
    ]
