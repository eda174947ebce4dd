"""FoldPadIntoConv: zero pads before a conv2d become its padding; other pads stay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tvm import relax

import lepton_compiler as lc
import lepton_runtime
from lepton_compiler.passes.fold_pad import FoldPadIntoConv

from .relax_eval import op_names


def _padded_conv(pad_width, layout="NCHW", value=0.0, mode="constant", padding=(0, 0, 0, 0)):
    shape = (1, 4, 9, 9) if layout == "NCHW" else (1, 9, 9, 4)
    channels = 4 + (pad_width[2] + pad_width[3] if layout == "NCHW" else pad_width[6] +
                    pad_width[7])
    w = np.ones((3, channels, 3, 3), "float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            p = bb.emit(relax.op.nn.pad(x, pad_width, pad_mode=mode, pad_value=value))
            weight = relax.const(w if layout == "NCHW" else w.transpose(2, 3, 1, 0))
            y = bb.emit_output(relax.op.nn.conv2d(
                p, weight, padding=padding, data_layout=layout,
                kernel_layout="OIHW" if layout == "NCHW" else "HWIO"))
        bb.emit_func_output(y)
    return bb.get()


@pytest.mark.parametrize("layout, pad_width, padding, expected", [
    ("NCHW", [0, 0, 0, 0, 0, 1, 0, 1], (0, 0, 0, 0), [0, 0, 1, 1]),
    ("NCHW", [0, 0, 0, 0, 2, 1, 0, 3], (1, 1, 1, 1), [3, 1, 2, 4]),
    ("NHWC", [0, 0, 1, 0, 0, 2, 0, 0], (0, 0, 0, 0), [1, 0, 0, 2]),
])
def test_a_zero_pad_of_the_spatial_axes_becomes_the_conv_padding(layout, pad_width, padding,
                                                                  expected):
    after = FoldPadIntoConv()(_padded_conv(pad_width, layout, padding=padding))
    assert "relax.nn.pad" not in op_names(after)
    conv = next(b.value for b in after["main"].body.blocks[0].bindings
                if getattr(b.value, "op", None) is not None and
                b.value.op.name == "relax.nn.conv2d")
    assert [int(v) for v in conv.attrs.padding] == expected


@pytest.mark.parametrize("pad_width, value, mode", [
    ([0, 0, 0, 0, 0, 1, 0, 1], 1.0, "constant"),   # not a zero pad
    ([0, 0, 1, 0, 0, 1, 0, 1], 0.0, "constant"),   # pads channels
    ([0, 0, 0, 0, 1, 1, 1, 1], 0.0, "reflect"),    # not a constant pad
])
def test_other_pads_stay(pad_width, value, mode):
    before = _padded_conv(pad_width, value=value, mode=mode)
    assert "relax.nn.pad" in op_names(FoldPadIntoConv()(before))


class SamePadNet(torch.nn.Module):
    """TF-style "same" padding: asymmetric explicit pads before padding-0 convs, one pad read
    by two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = torch.nn.Conv2d(8, 8, 3, stride=2, groups=8)
        self.conv = torch.nn.Conv2d(8, 16, 3)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1, dilation=2)

    def forward(self, x):
        y = F.relu6(self.dw(F.pad(x, (0, 1, 0, 1))))
        p = F.pad(y, (2, 1, 0, 3))
        return self.conv(p) + self.conv2(p)


def test_folded_models_match_torch_and_are_exact_in_int8(tmp_path):
    torch.manual_seed(0)
    model = SamePadNet().eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 15, 14)).astype(np.float32)
    host = lc.build(model, (x,), target="host")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(host(x), expected, rtol=1e-4, atol=1e-4)
    assert not [k.kernel for k in host._session.profile(x).kernels if "pad" in k.kernel]
    calibration = [(rng.standard_normal(x.shape).astype(np.float32),) for _ in range(3)]
    q = lc.build(model, (x,), target="lepton",
                 quantize=lc.QuantConfig(calibration_data=calibration))
    path = q.export(tmp_path / "pad.lepton")
    reference = q.quantization.reference(x)
    assert not [k.kernel for k in q._session.profile(x).kernels if "pad" in k.kernel]
    assert np.array_equal(lepton_runtime.load(path, mode="fast")(x), reference)
    assert np.array_equal(lepton_runtime.load(path, mode="sim")(x), reference)
