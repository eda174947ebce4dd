"""FoldPadIntoConv: a zero pad of a conv2d's input becomes the conv's own padding.

TF-style "same" padding exports (EfficientNet-Lite's stride-2 depthwise layers, any
``F.pad`` before a ``Conv2d(padding=0)``) write an explicit pad::

    p = R.nn.pad(x, pad_width=[0, 0, 0, 0, 0, 1, 0, 1], pad_value=0.0)   # NCHW: H and W
    y = R.nn.conv2d(p, W, padding=[0, 0, 0, 0], data_layout="NCHW")

which runs as a kernel of its own that copies the whole activation. The conv's padding
attribute is ``[top, left, bottom, right]`` and may be asymmetric, so::

    y = R.nn.conv2d(x, W, padding=[0, 0, 1, 1], data_layout="NCHW")

computes the same thing without the copy (an int8 conv pads with the input's zero point,
which is what a zero pad quantizes to). Only constant zero pads of the spatial axes of a
float conv2d input fold; the pad stays for its other readers, if any. Reads no spec fields.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.dpl import is_op, wildcard

#: Axes of H and W per conv2d data layout.
SPATIAL_AXES = {"NCHW": (2, 3), "NHWC": (1, 2)}


def _folded_padding(pad, conv) -> list[int] | None:
    """The conv's new ``[top, left, bottom, right]``, or None if the pad cannot fold."""
    attrs = pad.attrs
    if str(attrs.pad_mode) != "constant" or float(attrs.pad_value) != 0.0:
        return None
    dtype = str(getattr(pad.args[0].ty, "dtype", ""))
    axes = SPATIAL_AXES.get(str(conv.attrs.data_layout))
    if axes is None or not dtype.startswith("float"):
        return None
    widths = [int(v) for v in attrs.pad_width]
    rank = len(widths) // 2
    if rank != 4 or any(v < 0 for v in widths):
        return None
    before, after = widths[0::2], widths[1::2]
    if any(before[a] or after[a] for a in range(rank) if a not in axes):
        return None
    top, left, bottom, right = (int(v) for v in conv.attrs.padding)
    h, w = axes
    return [top + before[h], left + before[w], bottom + after[h], right + after[w]]


@relax.transform.function_pass(opt_level=0, name="lepton.FoldPadIntoConv")
class FoldPadIntoConv:
    """Fold a constant zero pad into the following conv2d's padding (module docstring)."""

    def transform_function(self, func, mod, ctx):
        if not isinstance(func, relax.Function):
            return func
        data = wildcard()
        pad = is_op("relax.nn.pad")(data)
        conv = is_op("relax.nn.conv2d")(pad, wildcard())

        def rewriter(expr, matches):
            call = matches[conv]
            padding = _folded_padding(matches[pad], call)
            if padding is None:
                return expr
            attrs = call.attrs
            return relax.op.nn.conv2d(
                matches[data], call.args[1], strides=attrs.strides, padding=padding,
                dilation=attrs.dilation, groups=attrs.groups, data_layout=attrs.data_layout,
                kernel_layout=attrs.kernel_layout, out_layout=attrs.out_layout,
                out_dtype=attrs.out_dtype)

        return relax.dpl.rewrite_call(conv, rewriter, func)


__all__ = ["FoldPadIntoConv"]
