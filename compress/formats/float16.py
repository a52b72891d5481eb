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

    @classmethod
    def from_parts(cls, name: str, tensors: dict[str, torch.Tensor], meta: dict) -> Float16Tensor:
        data = tensors[name]
        expected = DTYPES[meta["scheme"]]
        if data.dtype != expected or list(data.shape) != list(meta["shape"]):
            raise BadInput(
                f"weight '{name}': stored as {str(data.dtype).removeprefix('torch.')} {list(data.shape)}, "
                f"but its header says {meta['scheme']} {list(meta['shape'])} (corrupt compress metadata)."
            )
        return cls(meta["scheme"], data, getattr(torch, meta.get("dtype", "float32")))

    @staticmethod
    def part_names(name: str, meta: dict) -> list[str]:
        return [name]

    @staticmethod
    def planned_parts(name: str, meta: dict) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        return [(name, DTYPES[meta["scheme"]], tuple(meta["shape"]))]
