"""Sparse storage: a weight with many exact zeros is stored as a bitmask plus its kept values.

Layout of a weight `NAME` whose header entry has scheme `sparse`:
  NAME_mask   uint8, ceil(numel / 8) bytes: bit i of byte j (least significant first) says whether
              element 8*j + i of the flattened weight is kept
  NAME        the kept values, in row-major order, as a 1-D tensor

A float weight keeps its dtype (`inner` is null). The INT8 codes of a quantized weight can be stored
the same way (`inner` holds the INT8 entry's metadata; its scale is stored as usual). INT4 codes are
packed two per byte already and stay dense.

The bitmask costs one bit per element whatever the sparsity; a list of 16-bit indices would cost 16
bits per kept element, so the bitmask is the smaller layout whenever more than 1/16 of the weights
are kept, which covers every sparsity a pruned model uses in practice.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from compress.errors import BadInput, quoted
from compress.formats.checks import FLOAT_DTYPES, check_part, corrupt, dtype_field, is_count, shape_field

SCHEME = "sparse"
# Store a tensor sparsely only when it saves at least this fraction of its dense bytes.
MIN_SAVING = 0.10
_BITS = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor as packed bits, eight elements per byte, least significant bit first."""
    flat = mask.reshape(-1).to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros(-len(flat) % 8)])
    return (flat.reshape(-1, 8) * _BITS).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, numel: int) -> torch.Tensor:
    return ((packed[:, None] & _BITS) != 0).reshape(-1)[:numel]


def sparse_bytes(numel: int, kept: int, element_size: int) -> int:
    return math.ceil(numel / 8) + kept * element_size


def worth_storing_sparse(tensor: torch.Tensor) -> bool:
    """True when the bitmask layout is at least MIN_SAVING smaller than the dense tensor."""
    if tensor.dim() < 2 or tensor.numel() < 64:
        return False
    dense = tensor.numel() * tensor.element_size()
    kept = int(torch.count_nonzero(tensor))
    return sparse_bytes(tensor.numel(), kept, tensor.element_size()) <= (1 - MIN_SAVING) * dense


class SparseCodec:
    """Codec for formats.CODECS: from_parts returns a dense tensor, or the inner codec's object."""

    @staticmethod
    def encode(name: str, dense: torch.Tensor, inner: dict | None) -> tuple[dict[str, torch.Tensor], dict]:
        """The stored parts of `dense` (the weight, or an INT8 weight's codes) and its header entry."""
        mask = dense != 0
        values = dense.reshape(-1)[mask.reshape(-1)].contiguous()
        meta = {
            "scheme": SCHEME,
            "shape": list(inner["shape"]) if inner else list(dense.shape),
            "dtype": inner["dtype"] if inner else str(dense.dtype).removeprefix("torch."),
            "stored_shape": list(dense.shape),
            "stored_dtype": str(dense.dtype).removeprefix("torch."),
            "nnz": int(values.numel()),
            "inner": inner,
        }
        return {name: values, f"{name}_mask": pack_mask(mask)}, meta

    @staticmethod
    def part_names(name: str, meta: dict) -> list[str]:
        inner = meta.get("inner")
        rest = [n for n in _inner_codec(inner, name).part_names(name, inner) if n != name] if inner else []
        return [name, f"{name}_mask", *rest]

    @staticmethod
    def check_meta(name: str, meta: dict, where: str) -> None:
        """BadInput naming the weight when its header entry cannot describe a sparse weight."""
        shape = shape_field(meta, "shape", name, where)
        stored = shape_field(meta, "stored_shape", name, where)
        dtype_field(meta, "dtype", name, where, FLOAT_DTYPES)
        inner = meta.get("inner")
        stored_dtypes = ("int8",) if inner else FLOAT_DTYPES
        dtype_field(meta, "stored_dtype", name, where, stored_dtypes)
        nnz = meta.get("nnz", 0)
        if not is_count(nnz) or nnz > math.prod(stored):
            raise corrupt(where, name, f"keeps {nnz!r} values of {math.prod(stored)}")
        if inner is None:
            if stored != shape:
                raise corrupt(where, name, f"stores shape {list(stored)} for a weight of shape {list(shape)}")
            return
        if not isinstance(inner, dict) or inner.get("scheme") != "int8":
            raise corrupt(where, name, "has an inner encoding that is not int8")
        _inner_codec(inner, name).check_meta(name, inner, where)
        rows, cols = inner["shape"][0], math.prod(inner["shape"][1:])
        if stored != (rows, cols) or list(shape) != list(inner["shape"]):
            raise corrupt(where, name, f"stores shape {list(stored)} for int8 codes of shape {[rows, cols]}")

    @staticmethod
    def from_parts(name: str, tensors: dict[str, torch.Tensor], meta: dict, where: str = "checkpoint") -> Any:
        dense = densify(name, tensors[name], tensors[f"{name}_mask"], meta, where)
        inner = meta.get("inner")
        if not inner:
            return dense
        return _inner_codec(inner, name).from_parts(name, {**tensors, name: dense}, inner, where)


def densify(
    name: str, values: torch.Tensor, packed: torch.Tensor, meta: dict, where: str = "checkpoint"
) -> torch.Tensor:
    """Scatter the kept values back into a dense tensor; BadInput when the parts do not agree."""
    shape = tuple(meta["stored_shape"])
    numel = math.prod(shape)
    check_part(where, name, f"{name}_mask", packed, torch.uint8, (math.ceil(numel / 8),))
    mask = unpack_mask(packed, numel)
    kept = int(mask.sum())
    stored_dtype = getattr(torch, meta.get("stored_dtype", str(values.dtype).removeprefix("torch.")))
    check_part(where, name, name, values, stored_dtype, (kept,))
    if kept != meta.get("nnz", kept):
        raise BadInput(
            f"{where}: sparse weight {quoted(name)}: its bitmask keeps {kept} values but its metadata says "
            f"{meta['nnz']} (corrupt)."
        )
    dense = torch.zeros(numel, dtype=values.dtype)
    dense[mask] = values
    return dense.reshape(shape)


def _inner_codec(inner: dict, name: str):
    """The codec of the encoding inside a sparse weight: INT8 codes only (INT4 is packed already)."""
    from compress.formats.quantized import QuantizedTensor

    if inner.get("scheme") != "int8":
        raise BadInput(f"sparse weight '{name}': unsupported inner encoding '{inner.get('scheme')}'.")
    return QuantizedTensor


def sparsify_state(tensors: dict, encoded: dict[str, dict]) -> tuple[dict, dict[str, dict]]:
    """Re-encode, in place of their dense form, the float weights and INT8 codes that are mostly zeros.

    Decided by content, so a pruned weight stays small after any later pass or a reload, and the
    encoding is exact: decoding gives back the very same tensor.
    """
    out: dict = {}
    encoded = dict(encoded)
    for name, tensor in tensors.items():
        meta = encoded.get(name)
        plain_float = meta is None and tensor.is_floating_point()
        int8_codes = meta is not None and meta.get("scheme") == "int8"
        if (plain_float or int8_codes) and worth_storing_sparse(tensor):
            parts, sparse_meta = SparseCodec.encode(name, tensor, meta)
            out.update(parts)
            encoded[name] = sparse_meta
        else:
            out[name] = tensor
    return out, encoded
