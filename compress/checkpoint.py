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

from compress.errors import BadInput, quoted
from compress.outputs import check_replaceable, output_lock, publish_mode, replace_owned, swap_in

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
    "U64": (8, "uint64"),
    "U32": (4, "uint32"),
    "U16": (2, "uint16"),
    "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
    "F8_E4M3": (1, "float8_e4m3fn"),
    "F8_E5M2": (1, "float8_e5m2"),
}
# Codes the safetensors format knows but compress does not read (sub-byte floats, complex).
_FOREIGN_DTYPES = frozenset({"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"})
_TORCH_TO_CODE = {name: code for code, (_, name) in _DTYPES.items()}
FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16"})
_MAX_HEADER = 100_000_000  # the reference implementation's limit
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
METADATA_KEY = "__metadata__"


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


class _DuplicateKey(ValueError):
    pass


def _strict_object(pairs: list[tuple[str, object]]) -> dict:
    """json object_pairs_hook: refuse a key given twice (the last one would silently win)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        if not _encodable(key) or (isinstance(value, str) and not _encodable(value)):
            raise ValueError("a lone surrogate escape")  # valid for Python's json, not UTF-8
        out[key] = value
    return out


def _no_constant(text: str) -> object:
    raise ValueError(f"{text} is not JSON")  # NaN / Infinity: Python's json accepts them, JSON does not


def _is_count(value: object) -> bool:
    """A non-negative JSON integer (not a bool, not a float such as 2.0)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class SafetensorsFile:
    """A validated safetensors file whose tensors are read one at a time.

    The header is checked as the reference implementation checks it: UTF-8 JSON, integer shapes
    and offsets, and a data section that the tensors cover exactly (no gap, no overlap, nothing
    after the last tensor). Duplicate keys, which the reference resolves silently to the last one,
    are refused.
    """

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
            json_follows = f.read(64).lstrip(b" \t\r\n").startswith(b"{")
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
        header = self._parse_header(raw)
        meta = header.pop(METADATA_KEY, None)
        if meta is None:
            meta = {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise BadInput(f"{self.path}: has corrupt safetensors metadata (values must be strings).")
        self.metadata: dict[str, str] = meta
        self.data_start = 8 + header_len
        self.size = size
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            self.tensors[name] = self._parse_entry(name, entry)
        self._check_coverage()

    def _parse_header(self, raw: bytes) -> dict:
        try:
            text = raw.decode("utf-8")
            header = json.loads(text, object_pairs_hook=_strict_object, parse_constant=_no_constant)
        except _DuplicateKey as exc:
            raise BadInput(
                f"{self.path}: has the key {quoted(str(exc))} twice in its safetensors header (corrupt)."
            ) from None
        except (UnicodeError, ValueError):  # JSONDecodeError is a ValueError
            raise BadInput(
                f"{self.path}: has a corrupt safetensors header (not valid JSON in UTF-8)."
            ) from None
        if not isinstance(header, dict):
            raise BadInput(f"{self.path}: has a corrupt safetensors header (not a JSON object).")
        return header

    def _parse_entry(self, name: str, entry: object) -> TensorInfo:
        corrupt = BadInput(f"{self.path}: has a corrupt entry for tensor {quoted(name)} in its header.")
        if not isinstance(entry, dict):
            raise corrupt
        code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(code, str) or not isinstance(shape, list) or not isinstance(offsets, list):
            raise corrupt
        if not all(_is_count(d) for d in shape):
            raise BadInput(
                f"{self.path}: tensor {quoted(name)} has the shape {shape}; dimensions must be "
                "non-negative integers (corrupt header)."
            )
        if len(offsets) != 2 or not all(_is_count(x) for x in offsets):
            raise BadInput(
                f"{self.path}: tensor {quoted(name)} has the data offsets {offsets}; they must be two "
                "non-negative integers (corrupt header)."
            )
        if code in _FOREIGN_DTYPES:
            raise BadInput(
                f"{self.path}: tensor {quoted(name)} has dtype {code}, which compress does not read."
            )
        if code not in _DTYPES:
            raise BadInput(f"{self.path}: tensor {quoted(name)} has an unknown dtype {quoted(code)}.")
        begin, end = offsets
        expected = math.prod(shape) * _DTYPES[code][0]
        if end < begin or end - begin != expected:
            raise BadInput(
                f"{self.path}: tensor {quoted(name)} has offsets that do not match its shape "
                "(corrupt header)."
            )
        if self.data_start + end > self.size:
            raise BadInput(
                f"{self.path}: is truncated (tensor {quoted(name)} runs past the end of the file)."
            )
        return TensorInfo(name, code, tuple(shape), self.data_start + begin, self.data_start + end)

    def _check_coverage(self) -> None:
        """The tensors must tile the data section: no overlap, no gap, no bytes after the last one."""
        position, previous = self.data_start, None
        for info in sorted(self.tensors.values(), key=lambda t: (t.start, t.end)):
            if info.start < position:
                raise BadInput(
                    f"{self.path}: tensors {quoted(previous or '')} and {quoted(info.name)} overlap in the "
                    "data section (corrupt header)."
                )
            if info.start > position:
                where = f"before tensor {quoted(info.name)}"
                raise BadInput(
                    f"{self.path}: has {info.start - position} bytes {where} that no tensor covers "
                    "(corrupt header)."
                )
            position, previous = info.end, info.name
        if position != self.size:
            raise BadInput(
                f"{self.path}: has {self.size - position} bytes after its last tensor that no tensor "
                "covers (corrupt header or extra data)."
            )

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
                raise BadInput(f"{self.path}: is truncated while reading tensor {quoted(name)}.")
        dtype = torch_dtype(info.dtype)
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)

    def read_all(self) -> dict:
        return {name: self.read(name) for name in self.tensors}

    def iter_tensors(self) -> Iterator[tuple[str, object]]:
        for name in self.tensors:
            yield name, self.read(name)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
def atomic_output_dir(final: Path, owns: tuple[str, ...] | None = None) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `final` as a whole, on failure nothing is left.

    No file of an older output survives into the new one (a stale model.onnx would be timed as the
    new candidate), and a reader sees the old folder or the new one, never a mix. An existing folder
    is replaced only when compress wrote it (or it is empty); a second process writing the same
    output is refused (compress.outputs.output_lock).

    `owns` is for a writer that adds a few files to a folder it does not own (an ONNX graph beside a
    checkpoint): only the files so named are replaced, or removed when this run did not write them.
    """
    final = Path(final)
    with output_lock(final):
        if final.exists() and owns is None:
            check_replaceable(final)
        staging = _private_dir(final)
        try:
            yield staging
            publish_mode(staging)
            if owns is not None and final.is_dir():
                replace_owned(staging, final, owns)
            else:
                swap_in(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _private_dir(final: Path) -> Path:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    except PermissionError:
        raise BadInput(f"cannot write to {final}: permission denied.") from None


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it into place only if the block succeeds.

    The file gets the mode the user's umask gives an ordinary file (not mkstemp's private 0600).
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    except PermissionError:
        raise BadInput(f"cannot write to {final}: permission denied.") from None
    os.close(fd)
    try:
        yield Path(tmp)
        publish_mode(Path(tmp))
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
