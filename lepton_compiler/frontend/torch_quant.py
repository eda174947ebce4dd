"""PyTorch PT2E quantized exports: ``quantized_decomposed`` quantize/dequantize ops as Relax
``quantize``/``dequantize``, so a model quantized with ``prepare_pt2e``/``convert_pt2e``
compiles to int8 layers with its own scales and zero points (the same path as an ONNX QDQ
model; TVM 0.27's importer has no converters for these ops)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _dtype(value: Any) -> str:
    return str(value).replace("torch.", "")


def convert_map() -> dict[str, Callable[..., Any]]:
    """Converters for ``from_exported_program(custom_convert_map=...)``."""
    from tvm import relax

    def scalar_or_var(importer: Any, value: Any, dtype: str) -> Any:
        if hasattr(value, "op"):  # an fx node: a tensor of the program
            return relax.op.astype(importer.env[value], dtype)
        return relax.const(float(value) if dtype == "float32" else int(value), dtype)

    def quantize_per_tensor(node: Any, importer: Any) -> Any:
        x, scale, zero_point, _lo, _hi, dtype = node.args[:6]
        out = _dtype(dtype)
        return importer.block_builder.emit(relax.op.quantize(
            importer.env[x], scalar_or_var(importer, scale, "float32"),
            scalar_or_var(importer, zero_point, out), axis=-1, out_dtype=out))

    def dequantize_per_tensor(node: Any, importer: Any) -> Any:
        x, scale, zero_point, _lo, _hi, dtype = node.args[:6]
        return importer.block_builder.emit(relax.op.dequantize(
            importer.env[x], scalar_or_var(importer, scale, "float32"),
            scalar_or_var(importer, zero_point, _dtype(dtype)), axis=-1, out_dtype="float32"))

    def dequantize_per_channel(node: Any, importer: Any) -> Any:
        x, scales, zero_points, axis, _lo, _hi, dtype = node.args[:7]
        return importer.block_builder.emit(relax.op.dequantize(
            importer.env[x], scalar_or_var(importer, scales, "float32"),
            scalar_or_var(importer, zero_points, _dtype(dtype)), axis=int(axis),
            out_dtype="float32"))

    return {"quantize_per_tensor.default": quantize_per_tensor,
            "quantize_per_tensor.tensor": quantize_per_tensor,
            "dequantize_per_tensor.default": dequantize_per_tensor,
            "dequantize_per_tensor.tensor": dequantize_per_tensor,
            "dequantize_per_channel.default": dequantize_per_channel}
