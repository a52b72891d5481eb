"""The stored form of a 16-bit weight: the weight itself, rounded to bfloat16 or float16.

A plain safetensors tensor of dtype BF16 or F16 (`NAME`), half the bytes of float32. Its header
entry (`scheme` bf16 or fp16, `shape`, `dtype`: the weight's dtype before rounding) is what tells
the loader to build the layer in 16 bits (compress.qmodules.Float16Linear and siblings): the layer
computes in the stored dtype rather than being cast back to float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.errors import BadInput
from compress.formats.checks import FLOAT_DTYPES, check_part, dtype_field, shape_field

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FP16_MAX = 65504.0


@dataclass
class Float16Tensor:
    """One weight rounded to 16 bits (round to nearest even); `dequantize()` gives it back widened."""

    scheme: str  # "bf16" | "fp16"
    data: torch.Tensor  # the weight in DTYPES[scheme], its own shape
    dtype: torch.dtype  # the weight's dtype before rounding

    @classmethod
    def encode(cls, weight: torch.Tensor, scheme: str, name: str | None = None) -> Float16Tensor:
        """Round `weight` to the scheme's dtype; BadInput when float16 cannot hold its values."""
        if scheme == "fp16":
            largest = float(weight.detach().abs().max()) if weight.numel() else 0.0
            if not largest < FP16_MAX:  # also catches inf and nan
                which = f"weight '{name}'" if name else f"a weight of shape {list(weight.shape)}"
                raise BadInput(
                    f"quantize: {which} holds values up to {largest:.4g}, beyond float16's range "
                    f"(+-{FP16_MAX:.0f}); use scheme bf16 (float32's range) or exclude that layer."
                )
        return cls(scheme, weight.detach().to(DTYPES[scheme]).contiguous(), weight.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def group_size(self) -> None:
        return None

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.data.to(dtype or self.dtype)

    def parts(self, name: str) -> dict[str, torch.Tensor]:
        return {name: self.data}

    def meta(self) -> dict:
        return {
            "scheme": self.scheme,
            "shape": list(self.shape),
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    @staticmethod
    def check_meta(name: str, meta: dict, where: str) -> None:
        """BadInput naming the weight when its header entry cannot describe a 16-bit weight."""
        shape_field(meta, "shape", name, where, min_dims=1)
        dtype_field(meta, "dtype", name, where, FLOAT_DTYPES)

    @classmethod
    def from_parts(
        cls, name: str, tensors: dict[str, torch.Tensor], meta: dict, where: str = "checkpoint"
    ) -> Float16Tensor:
        """The weight from its stored value, checked against the dtype and shape its metadata plans."""
        for part, dtype, shape in cls.planned_parts(name, meta):
            check_part(where, name, part, tensors[part], dtype, shape)
        return cls(meta["scheme"], tensors[name], getattr(torch, meta["dtype"]))

    @staticmethod
    def part_names(name: str, meta: dict) -> list[str]:
        return [name]

    @staticmethod
    def planned_parts(name: str, meta: dict) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        return [(name, DTYPES[meta["scheme"]], tuple(meta["shape"]))]
