"""FastGeneralizedRCNN and d2ext's paste keep D2's export contract: scripting as in D2's
tests/test_export_torchscript.py, tracing with D2's ``TracingAdapter`` and flop counting as in
D2's tests/test_model_analysis.py (``MaskRCNNTest.test_flop``), also with
:func:`d2ext.layers.paste_masks` substituted for D2's ``paste_masks_in_image`` as a user would."""

from unittest import mock

import pytest
import torch
from detectron2.export import TracingAdapter, scripting_with_instances
from detectron2.export.torchscript_patch import _clear_jit_cache
from detectron2.structures import Boxes
from detectron2.utils.analysis import flop_count_operators
from detectron2.utils.testing import assert_instances_allclose, reload_script_model
from test_fast_paste import build_pair
from torch import Tensor

import d2ext.layers.mask_ops as d2ext_mask_ops
import d2ext.modeling.postprocess.fast_paste as fast_paste
from d2ext.layers import paste_masks

MASK_RCNN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"


@pytest.fixture(scope="module")
def pair():
    return build_pair(MASK_RCNN, "GeneralizedRCNN", "FastGeneralizedRCNN")


def image(h=64, w=80, seed=0):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


def test_script_fast_generalized_rcnn(pair, tmp_path):
    """As D2's ``TestScripting.testMaskRCNNFPN``: scripted (and saved/reloaded), raw inference
    equals eager; the scripted model is the stock class on the same weights."""
    ref, ours = pair
    fields = {
        "proposal_boxes": Boxes,
        "objectness_logits": Tensor,
        "pred_boxes": Boxes,
        "scores": Tensor,
        "pred_classes": Tensor,
        "pred_masks": Tensor,
    }
    script_model = reload_script_model(scripting_with_instances(ours, fields))
    batch = [{"image": image()}, {"image": image(48, 56, seed=1)}]
    with torch.no_grad():
        eager = ours.inference(batch, do_postprocess=False)
        scripted = script_model.inference(batch, do_postprocess=False)
        stock = ref.inference(batch, do_postprocess=False)
    assert len(eager[0]) > 0
    for e, s, r in zip(eager, scripted, stock):
        assert_instances_allclose(e, s)
        assert_instances_allclose(r, s)
    assert isinstance(ours, fast_paste.FastGeneralizedRCNN)  # scripting left the model as it was
    assert not ours.roi_heads.mask_head._forward_hooks


@pytest.mark.parametrize("sizes", ["int", "traced"])
def test_trace_fast_generalized_rcnn_with_postprocess(pair, sizes):
    """As D2's ``TestTracing.testMaskRCNNFPN_with_postproc``: traced on one image size, run on
    another; equals eager and stock. With int output sizes the traced graph holds
    :func:`paste_masks` scripted (``script_if_tracing``); with sizes traced as tensors, D2's paste
    for tensor sizes."""
    ref, ours = pair

    def inference_func(model, img):
        x = {"image": img}
        if sizes == "int":
            x.update(height=90, width=100)
        return model.inference([x], do_postprocess=True)[0]["instances"]

    adapter = TracingAdapter(ours, (image(),), inference_func)
    adapter.eval()
    with (
        torch.no_grad(),
        mock.patch.object(fast_paste, "paste_masks", wraps=fast_paste.paste_masks) as spy,
    ):
        traced = torch.jit.trace(adapter, (image(48, 60, seed=2),), check_trace=False)
    assert spy.call_count == (1 if sizes == "int" else 0)
    test_image = image(72, 96, seed=3)
    with torch.no_grad():
        eager = inference_func(ours, test_image)
        stock = inference_func(ref, test_image)
        got = adapter.outputs_schema(traced(test_image))
    assert len(eager) > 0 and got.pred_masks.dtype == torch.bool
    assert got.pred_masks.shape == (
        (len(eager), 90, 100) if sizes == "int" else (len(eager), 72, 96)
    )
    assert_instances_allclose(eager, got, size_as_tensor=True)
    assert_instances_allclose(stock, got, size_as_tensor=True)
    assert torch.equal(eager.pred_masks, got.pred_masks)


def test_flop_count_fast_generalized_rcnn(pair):
    """D2's ``MaskRCNNTest.test_flop`` inputs (without and with an output size): the flop
    counter traces the model; the counts equal the stock model's."""
    ref, ours = pair
    img = image()
    for batch in ([{"image": img}], [{"image": img, "height": 70, "width": 90}]):
        with mock.patch.object(fast_paste, "paste_masks", wraps=fast_paste.paste_masks) as spy:
            res = flop_count_operators(ours, batch)
        assert spy.call_count == ("height" in batch[0])
        assert res == flop_count_operators(ref, batch)
        assert res["conv"] > 0


def runs_d2ext_paste(traced) -> bool:
    """Whether a traced model's graph runs code of ``d2ext/layers/mask_ops.py``: the graph's
    source ranges name the file of each statement it holds, so stock D2 code never matches."""
    return d2ext_mask_ops.__file__ in str(traced.inlined_graph)


def test_paste_masks_replaces_d2_paste_under_tracing(pair):
    """A user swapping :func:`paste_masks` in for D2's ``paste_masks_in_image`` (which D2's
    ``ROIMasks`` and ``_paste_masks_tensor_shape`` script when traced): flop counting and
    tracing of the stock model still work and give the same results, and the traced graphs run
    our paste (int output sizes: called from ``ROIMasks``; sizes traced as tensors: scripted into
    ``_paste_masks_tensor_shape``), so the swap took effect."""
    ref, _ = pair
    img = image()
    batches = ([{"image": img}], [{"image": img, "height": 70, "width": 90}])
    expected = [flop_count_operators(ref, b) for b in batches]
    with torch.no_grad():
        expected_out = ref.inference(batches[1])[0]["instances"]
    _clear_jit_cache()  # D2's scripted _paste_masks_tensor_shape must see the swapped function
    traced, trace_image = {}, image(48, 60, seed=2)
    try:
        with mock.patch("detectron2.layers.mask_ops.paste_masks_in_image", paste_masks):
            assert [flop_count_operators(ref, b) for b in batches] == expected
            for sizes, extra in (("int", {"height": 70, "width": 90}), ("traced", {})):

                def infer(model, x, extra=extra):
                    return model.inference([{"image": x, **extra}])[0]["instances"]

                adapter = TracingAdapter(ref, (img,), infer)
                with torch.no_grad():
                    traced[sizes] = torch.jit.trace(adapter, (trace_image,), check_trace=False)
                    if sizes == "int":
                        got = adapter.outputs_schema(traced[sizes](img))
    finally:
        _clear_jit_cache()
    assert runs_d2ext_paste(traced["int"]) and runs_d2ext_paste(traced["traced"])
    assert torch.equal(got.pred_masks, expected_out.pred_masks)
    assert torch.equal(got.pred_boxes.tensor, expected_out.pred_boxes.tensor)
