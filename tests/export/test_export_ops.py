"""Inside a trace or an ONNX export d2ext's compiled ops give way to their pure-torch references
automatically, so an exported graph needs no d2ext extension and follows its inputs."""

import io

import pytest
import torch

from d2ext.layers import assemble_masks, assemble_masks_reference
from d2ext.layers._ext import extension_available

pytestmark = pytest.mark.skipif(
    not extension_available(), reason="the compiled extension is what this checks the swap of"
)


def _inputs(n=5, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(k, 12, 16, generator=g)
    coeffs = torch.randn(n, k, generator=g)
    xy = torch.rand(n, 2, generator=g) * 0.6
    boxes = torch.cat([xy, xy + 0.1 + torch.rand(n, 2, generator=g) * 0.3], dim=1)
    return protos, coeffs, boxes


class Assemble(torch.nn.Module):
    def forward(self, protos, coeffs, boxes):
        return assemble_masks(protos, coeffs, boxes, (48, 64), threshold=0.5, crop_padding=1)


def test_eager_uses_the_extension(monkeypatch):
    calls = []
    op = torch.ops.d2ext.assemble_masks

    def spy(*args):
        calls.append(1)
        return op(*args)

    monkeypatch.setattr(torch.ops.d2ext, "assemble_masks", spy, raising=False)
    Assemble()(*_inputs())
    assert calls == [1]


def test_trace_records_the_reference_and_follows_new_inputs():
    traced = torch.jit.trace(Assemble(), _inputs(n=5))
    assert "d2ext::" not in str(traced.inlined_graph)
    # another number of detections and other values: the graph computes, not replays
    protos, coeffs, boxes = _inputs(n=9, seed=1)
    expected = assemble_masks_reference(protos, coeffs, boxes, (48, 64), 0.5, 1)
    assert torch.equal(traced(protos, coeffs, boxes), expected)
    assert torch.equal(Assemble()(protos, coeffs, boxes), expected)  # the extension agrees


def test_onnx_export_runs_the_reference():
    ort = pytest.importorskip("onnxruntime")
    f = io.BytesIO()
    torch.onnx.export(
        Assemble(),
        _inputs(n=5),
        f,
        dynamo=False,
        opset_version=17,
        input_names=["protos", "coeffs", "boxes"],
        dynamic_axes={"coeffs": {0: "n"}, "boxes": {0: "n"}},
    )
    protos, coeffs, boxes = _inputs(n=7, seed=2)
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = session.run(
        None, {"protos": protos.numpy(), "coeffs": coeffs.numpy(), "boxes": boxes.numpy()}
    )
    expected = assemble_masks_reference(protos, coeffs, boxes, (48, 64), 0.5, 1)
    assert torch.equal(torch.from_numpy(out), expected)
