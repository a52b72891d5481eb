"""The stored form of a quantized weight: integer codes, scales and zero points.

INT8 is symmetric per output row: `w = q * scale[row]`, q in [-127, 127], stored as int8.
INT4 is group-wise along the input dimension: `w = (q - zero) * scale[row, group]`, q in [0, 15],
two codes per byte (the even column in the low nibble), scales as float16. Symmetric INT4 has an
implicit zero point of 8. This is the layout of ONNX Runtime's MatMulNBits, so an INT4 weight
exports without being re-quantized, whatever algorithm chose its codes.

A weight of more than two dimensions (a convolution kernel) is treated as [shape[0], rest].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from compress.formats.checks import FLOAT_DTYPES, check_part, corrupt, dtype_field, is_count, shape_field

SCHEMES = ("int8", "int4")
INT4_SYMMETRIC_ZERO = 8


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack uint8 codes in [0, 15] of shape [rows, n] into [rows, ceil(n / 2)] bytes."""
    if codes.dtype != torch.uint8:
        raise TypeError("pack_int4 expects uint8 codes")
    rows, n = codes.shape
    if n % 2:
        codes = torch.cat([codes, codes.new_zeros(rows, 1)], dim=1)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of pack_int4: [rows, ceil(n / 2)] bytes -> [rows, n] uint8 codes."""
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)[:, :n]


@dataclass
class QuantizedTensor:
    """One quantized weight in its stored form; `dequantize()` gives back floats."""

    scheme: str
    data: torch.Tensor  # int8 [rows, cols] | uint8 packed [rows, cols // 2]
    scale: torch.Tensor  # float32 [rows] | float16 [rows, groups]
    zero: torch.Tensor | None  # int4 asymmetric only: uint8 packed [rows, ceil(groups / 2)]
    shape: tuple[int, ...]
    dtype: torch.dtype
    group_size: int | None = None

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def symmetric(self) -> bool:
        return self.zero is None

    @property
    def groups(self) -> int:
        return self.cols // self.group_size if self.group_size else 1

    def codes(self) -> torch.Tensor:
        """Integer codes as stored: int8 [rows, cols] or uint8 [rows, cols] in [0, 15]."""
        if self.scheme == "int8":
            return self.data
        return unpack_int4(self.data, self.cols)

    def zero_points(self) -> torch.Tensor:
        """INT4 zero points as uint8 [rows, groups] (8 everywhere when symmetric)."""
        if self.zero is None:
            return torch.full((self.rows, self.groups), INT4_SYMMETRIC_ZERO, dtype=torch.uint8)
        return unpack_int4(self.zero, self.groups)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.dtype
        if self.scheme == "int8":
            w = self.data.to(torch.float32) * self.scale.to(torch.float32)[:, None]
        else:
            g = self.group_size
            codes = self.codes().to(torch.float32).reshape(self.rows, self.groups, g)
            zero = self.zero_points().to(torch.float32)[:, :, None]
            w = (codes - zero) * self.scale.to(torch.float32)[:, :, None]
        return w.reshape(self.shape).to(dtype)

    @property
    def nbytes(self) -> int:
        parts = [self.data, self.scale] + ([self.zero] if self.zero is not None else [])
        return sum(p.numel() * p.element_size() for p in parts)

    def parts(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors stored in the checkpoint for the weight called `name`."""
        out = {name: self.data, f"{name}_scale": self.scale}
        if self.zero is not None:
            out[f"{name}_zero"] = self.zero
        return out

    def meta(self) -> dict:
        """What the header records about this tensor (JSON-serialisable)."""
        return {
            "scheme": self.scheme,
            "shape": list(self.shape),
            "dtype": str(self.dtype).removeprefix("torch."),
            "group_size": self.group_size,
            "symmetric": self.symmetric,
        }

    @staticmethod
    def check_meta(name: str, meta: dict, where: str) -> None:
        """BadInput naming the weight when its header entry cannot describe an INT8 or INT4 weight."""
        shape = shape_field(meta, "shape", name, where, min_dims=2)
        dtype_field(meta, "dtype", name, where, FLOAT_DTYPES)
        group, symmetric = meta.get("group_size"), meta.get("symmetric", True)
        if not isinstance(symmetric, bool):
            raise corrupt(where, name, f"has symmetric {symmetric!r}, not true or false")
        if meta["scheme"] == "int8":
            if group is not None or not symmetric:
                raise corrupt(
                    where,
                    name,
                    f"says int8 with group_size {group!r} and symmetric {symmetric}; int8 is "
                    "per row (group_size null) and symmetric",
                )
            return
        cols = math.prod(shape[1:])
        if not is_count(group) or group == 0 or cols % group:
            raise corrupt(
                where, name, f"says int4 with group_size {group!r}, which does not divide its {cols} columns"
            )

    @classmethod
    def from_parts(
        cls, name: str, tensors: dict[str, torch.Tensor], meta: dict, where: str = "checkpoint"
    ) -> QuantizedTensor:
        """The weight from its stored parts, each checked against the form its metadata plans."""
        for part, dtype, shape in cls.planned_parts(name, meta):
            check_part(where, name, part, tensors[part], dtype, shape)
        return cls(
            scheme=meta["scheme"],
            data=tensors[name],
            scale=tensors[f"{name}_scale"],
            zero=tensors.get(f"{name}_zero"),
            shape=tuple(meta["shape"]),
            dtype=getattr(torch, meta["dtype"]),
            group_size=meta.get("group_size"),
        )

    @staticmethod
    def part_names(name: str, meta: dict) -> list[str]:
        names = [name, f"{name}_scale"]
        if meta["scheme"] == "int4" and not meta.get("symmetric", True):
            names.append(f"{name}_zero")
        return names

    @staticmethod
    def planned_parts(name: str, meta: dict) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """Names, dtypes and shapes of the stored parts, known before any data is quantized."""
        shape = tuple(meta["shape"])
        rows, cols = shape[0], math.prod(shape[1:])
        if meta["scheme"] == "int8":
            return [(name, torch.int8, (rows, cols)), (f"{name}_scale", torch.float32, (rows,))]
        groups = cols // meta["group_size"]
        out = [(name, torch.uint8, (rows, (cols + 1) // 2)), (f"{name}_scale", torch.float16, (rows, groups))]
        if not meta.get("symmetric", True):
            out.append((f"{name}_zero", torch.uint8, (rows, (groups + 1) // 2)))
        return out
