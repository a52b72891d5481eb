"""Reading and writing safetensors checkpoints, tensor by tensor.

The reader parses and validates the header itself and reads each tensor with plain file reads
rather than a memory map, so the resident memory of a streaming pass stays near the largest tensor
even for a checkpoint larger than RAM. The writer takes the full list of tensors up front (their
shapes are known before any data is computed) and then streams the bytes, so a quantized copy of a
huge checkpoint is written without holding it in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from compress.errors import BadInput

# safetensors dtype code -> (bytes per element, torch dtype name)
_DTYPES: dict[str, tuple[int, str]] = {
    "F64": (8, "float64"),
    "F32": (4, "float32"),
    "F16": (2, "float16"),
    "BF16": (2, "bfloat16"),
    "I64": (8, "int64"),
    "I32": (4, "int32"),
    "I16": (2, "int16"),
    "I8": (1, "int8"),
    "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
    "F8_E4M3": (1, "float8_e4m3fn"),
    "F8_E5M2": (1, "float8_e5m2"),
}
_TORCH_TO_CODE = {name: code for code, (_, name) in _DTYPES.items()}
FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16"})
_MAX_HEADER = 100 * 1024 * 1024
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in the file, without its data."""

    name: str
    dtype: str  # safetensors code, e.g. "F32"
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_CODES


def _looks_like_pickle(head: bytes) -> bool:
    # torch.save writes a zip archive (PK..) or, in its legacy format, a raw pickle (0x80 protocol byte).
    return head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and head[1] <= 5)


class SafetensorsFile:
    """A validated safetensors file whose tensors are read one at a time."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.exists():
            raise BadInput(f"{self.path}: no such file.")
        if self.path.is_dir():
            raise BadInput(f"{self.path}: is a folder, expected a .safetensors file.")
        size = self.path.stat().st_size
        with self.path.open("rb") as f:
            head = f.read(8)
            # A header length such as 0x0480 also starts with 0x80 0x04; safetensors' JSON follows with '{'.
            json_follows = f.read(1) == b"{"
            f.seek(8)
            if (_looks_like_pickle(head) and not json_follows) or self.path.suffix in _PICKLE_SUFFIXES:
                raise BadInput(
                    f"{self.path}: is a PyTorch pickle checkpoint; compress reads .safetensors only and "
                    "does not unpickle files (convert it with safetensors.torch.save_file after loading it "
                    "yourself with torch.load(..., weights_only=True))."
                )
            if len(head) < 8:
                raise BadInput(f"{self.path}: is not a safetensors file (truncated: {size} bytes).")
            (header_len,) = struct.unpack("<Q", head)
            if header_len == 0 or header_len > _MAX_HEADER:
                raise BadInput(
                    f"{self.path}: is not a safetensors file (implausible header length {header_len})."
                )
            if 8 + header_len > size:
                raise BadInput(f"{self.path}: is truncated (the header runs past the end of the file).")
            raw = f.read(header_len)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadInput(f"{self.path}: has a corrupt safetensors header (not valid JSON).") from None
        if not isinstance(header, dict):
            raise BadInput(f"{self.path}: has a corrupt safetensors header (not a JSON object).")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise BadInput(f"{self.path}: has corrupt safetensors metadata (values must be strings).")
        self.metadata: dict[str, str] = meta
        self.data_start = 8 + header_len
        self.size = size
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            self.tensors[name] = self._parse_entry(name, entry)

    def _parse_entry(self, name: str, entry: object) -> TensorInfo:
        try:
            code = entry["dtype"]  # type: ignore[index]
            shape = tuple(int(d) for d in entry["shape"])  # type: ignore[index]
            begin, end = (int(x) for x in entry["data_offsets"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            raise BadInput(f"{self.path}: has a corrupt entry for tensor '{name}' in its header.") from None
        if code not in _DTYPES:
            raise BadInput(f"{self.path}: tensor '{name}' has an unknown dtype '{code}'.")
        expected = math.prod(shape) * _DTYPES[code][0]
        if end - begin != expected or begin < 0:
            raise BadInput(
                f"{self.path}: tensor '{name}' has offsets that do not match its shape (corrupt header)."
            )
        if self.data_start + end > self.size:
            raise BadInput(f"{self.path}: is truncated (tensor '{name}' runs past the end of the file).")
        return TensorInfo(name, code, shape, self.data_start + begin, self.data_start + end)

    def names(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def read(self, name: str):
        """Read one tensor into a fresh CPU torch tensor (no memory map)."""
        import torch

        info = self.tensors[name]
        buf = bytearray(info.nbytes)
        with self.path.open("rb") as f:
            f.seek(info.start)
            if f.readinto(buf) != info.nbytes:
                raise BadInput(f"{self.path}: is truncated while reading tensor '{name}'.")
        dtype = torch_dtype(info.dtype)
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)

    def read_all(self) -> dict:
        return {name: self.read(name) for name in self.tensors}

    def iter_tensors(self) -> Iterator[tuple[str, object]]:
        for name in self.tensors:
            yield name, self.read(name)


def torch_dtype(code: str):
    """The torch dtype of a safetensors dtype code."""
    import torch

    return getattr(torch, _DTYPES[code][1])


def dtype_code(dtype) -> str:
    """The safetensors code of a torch dtype."""
    name = str(dtype).removeprefix("torch.")
    try:
        return _TORCH_TO_CODE[name]
    except KeyError:
        raise BadInput(f"tensor dtype {name} cannot be stored in safetensors.") from None


def dtype_size(code: str) -> int:
    return _DTYPES[code][0]


class StreamingWriter:
    """Writes a safetensors file whose tensor list is declared before any data.

    Declare every tensor with `declare`, then `write` each one in the same order. The header is
    written once, so the data never needs to be held in memory together.
    """

    def __init__(self, path: Path, metadata: dict[str, str] | None = None):
        self.path = path
        self.metadata = dict(metadata or {})
        self._entries: list[tuple[str, str, tuple[int, ...], int]] = []
        self._file = None
        self._next = 0

    def declare(self, name: str, code: str, shape: tuple[int, ...]) -> None:
        if self._file is not None:
            raise RuntimeError("declare() after the first write()")
        self._entries.append((name, code, tuple(int(d) for d in shape), math.prod(shape) * _DTYPES[code][0]))

    def _open(self) -> None:
        self._file = self.path.open("wb")
        self._file.write(header_bytes([(n, c, s) for n, c, s, _ in self._entries], self.metadata))

    def write(self, name: str, tensor) -> None:
        if self._file is None:
            self._open()
        expected_name, code, shape, nbytes = self._entries[self._next]
        if name != expected_name:
            raise RuntimeError(f"expected tensor {expected_name!r}, got {name!r}")
        if tuple(tensor.shape) != shape or dtype_code(tensor.dtype) != code:
            raise RuntimeError(f"tensor {name!r} does not match its declared shape or dtype")
        data = tensor_bytes(tensor)
        if len(data) != nbytes:
            raise RuntimeError(f"tensor {name!r} has {len(data)} bytes, declared {nbytes}")
        self._file.write(data)
        self._next += 1

    def close(self) -> None:
        if self._file is None:
            self._open()
        if self._next != len(self._entries):
            self._file.close()
            raise RuntimeError(f"{len(self._entries) - self._next} declared tensors were never written")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def header_bytes(entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]) -> bytes:
    """The length prefix and JSON header of a safetensors file whose tensors (name, dtype code,
    shape) follow in this order, packed back to back."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, code, shape in entries:
        nbytes = math.prod(shape) * _DTYPES[code][0]
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format aligns the data section to 8 bytes
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(tensor):
    """The tensor's bytes as a uint8 array over its own memory (no copy of a large weight)."""
    import torch

    t = tensor.detach().contiguous().cpu()
    if t.numel() == 0:
        return b""
    # view as raw bytes: works for every dtype, bfloat16 and float8 included
    return t.reshape(-1).view(torch.uint8).numpy()


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a dict of tensors (already in memory) as one safetensors file."""
    writer = StreamingWriter(path, metadata)
    for name, t in tensors.items():
        writer.declare(name, dtype_code(t.dtype), tuple(t.shape))
    for name, t in tensors.items():
        writer.write(name, t)
    writer.close()


def sha256_file(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_output_dir(final: Path) -> Iterator[Path]:
    """Yield a staging folder; on success move its files into `final`, on failure leave nothing behind.

    Each file is moved with os.replace (atomic on one file system), so a reader never sees a
    half-written file. If `final` did not exist before and the run fails, it does not exist after.
    """
    final = Path(final)
    existed = final.exists()
    if existed and not final.is_dir():
        raise BadInput(f"{final}: exists and is not a folder.")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield staging
        final.mkdir(exist_ok=True)
        for item in sorted(staging.rglob("*")):
            target = final / item.relative_to(staging)
            if item.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(item, target)
    except BaseException:
        if not existed and final.exists():
            shutil.rmtree(final, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
