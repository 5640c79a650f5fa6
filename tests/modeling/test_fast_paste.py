"""FastGeneralizedRCNN / FastPanopticFPN: stock D2 models with d2ext's mask paste give D2's outputs.

The paste kernel replays torch's float32 rounding, so on CPUs where torch's kernels use FMA
(AVX2/AVX512), and whenever the reference runs (``D2EXT_DISABLE_EXT=1``: D2's own paste), the
masks are bit-identical; elsewhere only pixels whose pasted value is within 1e-6 of the threshold
(exact ties) may differ (see d2ext/layers/mask_ops.py).
"""

from unittest import mock

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import GeneralizedRCNN, PanopticFPN, build_model, detector_postprocess
from detectron2.structures import Instances, ROIMasks

import d2ext.modeling.postprocess.fast_paste as fast_paste
from d2ext import add_d2ext_config
from d2ext.layers import extension_available
from d2ext.layers.mask_ops import paste_mask_values

BIT_EXACT = not extension_available() or torch.backends.cpu.get_cpu_capability() in (
    "AVX2",
    "AVX512",
)
TIE = 1e-6


def small_cfg(zoo_config: str, meta_arch: str):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file(zoo_config))
    cfg.MODEL.META_ARCHITECTURE = meta_arch
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random weights: keep detections
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 64
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    if meta_arch.endswith("PanopticFPN"):
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 4
        cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.0
    return cfg


def build_pair(zoo_config: str, stock: str, fast: str, cfg_fn=small_cfg):
    torch.manual_seed(0)
    ref = build_model(cfg_fn(zoo_config, stock)).eval()
    ours = build_model(cfg_fn(zoo_config, fast)).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def inputs(h=200, w=250):
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    # output size != input size: boxes are rescaled before pasting
    return [{"image": image, "height": h * 3 // 2, "width": w * 3 // 2}]


def pasted_values(model, batched_inputs, instances):
    """The float values D2's paste thresholds for ``instances`` (the model's final output): the
    raw (R, 1, M, M) mask probabilities pasted into the final (rescaled, clipped) boxes. The raw
    rows are first filtered by D2's ``detector_postprocess`` itself (it keeps the boxes that are
    ``nonempty()`` once rescaled and clipped), so raw row i is final row i."""
    with torch.no_grad():
        raw = model.inference(batched_inputs, do_postprocess=False)
    if isinstance(raw, tuple):  # PanopticFPN: (instances, sem_seg)
        raw = raw[0]
    raw = raw[0]
    rows = Instances(raw.image_size, pred_boxes=raw.pred_boxes.clone(), row=torch.arange(len(raw)))
    kept = detector_postprocess(rows, *instances.image_size)  # scales pred_boxes in place
    assert torch.equal(kept.pred_boxes.tensor, instances.pred_boxes.tensor)
    masks = raw.pred_masks[kept.row, 0]
    return paste_mask_values(masks, instances.pred_boxes.tensor, instances.image_size)


def assert_same_masks(got, expected, values, threshold=0.5):
    """Bit-identical (module doc); where not promised, differences only at threshold ties."""
    assert got.dtype == expected.dtype == torch.bool and got.shape == expected.shape
    if BIT_EXACT:
        assert torch.equal(got, expected), f"{int((got != expected).sum())} pixels differ"
    else:
        far = (got != expected) & ((values - threshold).abs() > TIE)
        assert not far.any(), f"{int(far.sum())} pixels differ away from the threshold"


def assert_same_instances(a, b, values):
    assert len(a) > 0 and len(a) == len(b)
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert torch.equal(a.scores, b.scores) and torch.equal(a.pred_classes, b.pred_classes)
    assert a.pred_masks.shape == b.pred_masks.shape == (len(a), 300, 375)
    assert_same_masks(b.pred_masks, a.pred_masks, values)


@pytest.fixture(scope="module")
def mask_rcnn_pair():
    return build_pair(
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
        "GeneralizedRCNN",
        "FastGeneralizedRCNN",
    )


def test_fast_generalized_rcnn_matches_stock_mask_rcnn(mask_rcnn_pair):
    ref, ours = mask_rcnn_pair
    assert ours.fast_paste_masks
    with torch.no_grad():
        expected = ref(inputs())[0]["instances"]
        with mock.patch.object(fast_paste, "paste_masks", wraps=fast_paste.paste_masks) as spy:
            got = ours(inputs())[0]["instances"]
    assert spy.call_count == 1  # the fast path ran
    assert_same_instances(expected, got, pasted_values(ref, inputs(), expected))


def test_fast_generalized_rcnn_other_inference_paths(mask_rcnn_pair):
    _, ours = mask_rcnn_pair
    small = inputs(64, 80)
    with torch.no_grad():
        # raw outputs are untouched: (R, 1, M, M) probabilities, and the hook is removed after
        raw = ours.inference(small, do_postprocess=False)[0]
        assert isinstance(raw.pred_masks, torch.Tensor) and raw.pred_masks.shape[1] == 1
        assert not ours.roi_heads.mask_head._forward_hooks
        # given boxes (mask head only) also goes through the fast paste
        boxes_only = Instances(
            raw.image_size, pred_boxes=raw.pred_boxes, pred_classes=raw.pred_classes
        )
        with mock.patch.object(fast_paste, "paste_masks", wraps=fast_paste.paste_masks) as spy:
            given = ours.inference(small, detected_instances=[boxes_only])[0]["instances"]
    assert spy.call_count == 1 and given.pred_masks.shape == (len(raw), 96, 120)


def test_fast_paste_switch():
    cfg = small_cfg("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", "FastGeneralizedRCNN")
    assert fast_paste._fast_paste_from_cfg(cfg) == {"fast_paste_masks": True}
    cfg.MODEL.FAST_POSTPROCESS.PASTE_MASKS = False
    assert fast_paste._fast_paste_from_cfg(cfg) == {"fast_paste_masks": False}
    head = torch.nn.Module()
    head.mask_head = torch.nn.Identity()
    with fast_paste._masks_pasted_by_d2ext(head, enabled=False):
        assert not head.mask_head._forward_hooks
    with fast_paste._masks_pasted_by_d2ext(head, enabled=True):
        assert len(head.mask_head._forward_hooks) == 1
    assert not head.mask_head._forward_hooks


def assert_same_panoptic(expected, got, values):
    assert_same_instances(expected["instances"], got["instances"], values)
    assert torch.equal(expected["sem_seg"], got["sem_seg"])
    seg_a, info_a = expected["panoptic_seg"]
    seg_b, info_b = got["panoptic_seg"]
    if BIT_EXACT or torch.equal(expected["instances"].pred_masks, got["instances"].pred_masks):
        assert torch.equal(seg_a, seg_b) and info_a == info_b
    return info_b


def test_fast_panoptic_fpn_matches_stock():
    ref, ours = build_pair(
        "COCO-PanopticSegmentation/Base-Panoptic-FPN.yaml", "PanopticFPN", "FastPanopticFPN"
    )
    with torch.no_grad():
        expected = ref(inputs())[0]
        with mock.patch.object(fast_paste, "paste_masks", wraps=fast_paste.paste_masks) as spy:
            got = ours(inputs())[0]
    assert spy.call_count == 1
    assert_same_panoptic(expected, got, pasted_values(ref, inputs(), expected["instances"]))


def confident_panoptic_cfg(zoo_config: str, meta_arch: str):
    """D2's default test thresholds (ROI score 0.5, panoptic instance confidence 0.5)."""
    cfg = small_cfg(zoo_config, meta_arch)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.5
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.5
    return cfg


def test_fast_panoptic_fpn_with_confident_detections():
    """A Panoptic FPN that detects objects at D2's default thresholds: its box predictor says
    "class 1" with probability e^5 / (e^5 + 3) = 0.98 for every proposal and keeps the proposal
    boxes, so the panoptic output holds thing segments built from the pasted masks."""
    ref, ours = build_pair(
        "COCO-PanopticSegmentation/Base-Panoptic-FPN.yaml",
        "PanopticFPN",
        "FastPanopticFPN",
        confident_panoptic_cfg,
    )
    for model in (ref, ours):
        predictor = model.roi_heads.box_predictor
        with torch.no_grad():
            predictor.cls_score.weight.zero_()
            predictor.cls_score.bias.zero_()
            predictor.cls_score.bias[1] = 5.0
            predictor.bbox_pred.weight.zero_()
            predictor.bbox_pred.bias.zero_()
    with torch.no_grad():
        expected = ref(inputs())[0]
        with mock.patch.object(fast_paste, "paste_masks", wraps=fast_paste.paste_masks) as spy:
            got = ours(inputs())[0]
    assert spy.call_count == 1
    inst = got["instances"]
    assert (
        len(inst) >= 5
        and bool((inst.scores > 0.5).all())
        and set(inst.pred_classes.tolist()) == {1}
    )
    assert 0 < inst.pred_masks.float().mean() < 1
    info = assert_same_panoptic(expected, got, pasted_values(ref, inputs(), expected["instances"]))
    things = [s for s in info if s["isthing"]]
    assert len(things) >= 3 and all(s["category_id"] == 1 for s in things)
    seg = got["panoptic_seg"][0]
    assert all(int((seg == s["id"]).sum()) > 0 for s in things)


def test_fast_paste_mixin_is_shared():
    """One ``fast_paste_masks`` switch for both classes; scripting prepares the stock class on
    the same parameters."""
    for fast, stock in (
        (fast_paste.FastGeneralizedRCNN, GeneralizedRCNN),
        (fast_paste.FastPanopticFPN, PanopticFPN),
    ):
        assert issubclass(fast, fast_paste.FastPasteMixin) and issubclass(fast, stock)
        assert "__init__" not in vars(fast) and "from_config" not in vars(fast)
    cfg = small_cfg("COCO-PanopticSegmentation/Base-Panoptic-FPN.yaml", "FastPanopticFPN")
    cfg.MODEL.FAST_POSTPROCESS.PASTE_MASKS = False
    model = build_model(cfg).eval()
    assert not model.fast_paste_masks
    prepared = model.__prepare_scriptable__()
    assert type(prepared).inference is PanopticFPN.inference and isinstance(prepared, PanopticFPN)
    assert not isinstance(prepared, fast_paste.FastPasteMixin)
    assert all(a is b for a, b in zip(prepared.parameters(), model.parameters()))
    assert prepared._modules is not model._modules
    with torch.no_grad():
        (out,) = model(inputs(64, 80))
    assert isinstance(out["instances"].pred_masks, torch.Tensor)
    assert not model.roi_heads.mask_head._forward_hooks


def test_pasted_roi_masks_keeps_its_type():
    masks = fast_paste.PastedROIMasks(torch.rand(5, 28, 28))
    sub = masks[torch.tensor([True, False, True, False, True])]
    assert (
        isinstance(sub, fast_paste.PastedROIMasks) and isinstance(sub, ROIMasks) and len(sub) == 3
    )
    assert isinstance(masks.to(torch.device("cpu")), fast_paste.PastedROIMasks)
    with pytest.raises(ValueError):
        masks[0]


def test_fast_generalized_rcnn_matches_stock_keypoint_rcnn():
    """Keypoint R-CNN (here with a mask head too, as D2 allows): keypoints untouched, masks pasted."""
    zoo = "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml"
    torch.manual_seed(0)
    cfgs = [small_cfg(zoo, arch) for arch in ("GeneralizedRCNN", "FastGeneralizedRCNN")]
    for cfg in cfgs:
        cfg.MODEL.MASK_ON = True
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1  # keypoint heads are person-only in D2
    ref = build_model(cfgs[0]).eval()
    ours = build_model(cfgs[1]).eval()
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        expected = ref(inputs())[0]["instances"]
        with mock.patch.object(fast_paste, "paste_masks", wraps=fast_paste.paste_masks) as spy:
            got = ours(inputs())[0]["instances"]
    assert spy.call_count == 1
    assert_same_instances(expected, got, pasted_values(ref, inputs(), expected))
    assert torch.equal(expected.pred_keypoints, got.pred_keypoints)
    assert torch.equal(expected.pred_keypoint_heatmaps, got.pred_keypoint_heatmaps)
