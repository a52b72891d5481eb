"""Fuzzing the safetensors reader against the reference implementation.

Each generated file (seeded: the same files on every run) is either refused with one sentence that
names it (BadInput) or read exactly as the `safetensors` library reads it. Where the reference
accepts a file, compress refuses it only for what it documents as stricter: a key given twice (the
reference keeps the last silently) and dtypes it does not read (sub-byte floats, complex). Where the
reference refuses a file, compress refuses it too. A smaller sample goes through `compress quantize`.
"""

from __future__ import annotations

import contextlib
import json
import random
import struct
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from compress.checkpoint import SafetensorsFile
from compress.cli import main
from compress.errors import BadInput

DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}
DTYPES |= {"U16": 2, "U32": 4, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
STRICTER = ("twice", "does not read")  # refusals of files the reference accepts, by design
N_READER, N_CLI = 400, 24


def _tensor_bytes(rng: random.Random, code: str, numel: int) -> bytes:
    if code in ("F32", "F16", "BF16", "F64"):  # finite values, so quantizing them can succeed
        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        values = torch.randn(numel, generator=g).to(dtype[code])
        return values.view(torch.uint8).numpy().tobytes() if numel else b""
    if code == "BOOL":
        return bytes(rng.randrange(2) for _ in range(numel))
    return bytes(rng.randrange(256) for _ in range(numel * DTYPES[code]))


def _valid(rng: random.Random, quantizable: bool = False) -> tuple[dict, bytes]:
    """A valid header (as a dict) and data section, tensors stored in a random order; `quantizable`
    adds a float matrix that `compress quantize` would quantize."""
    header: dict = {}
    if rng.random() < 0.4:
        header["__metadata__"] = {f"k{i}": rng.choice(["v", "", "ü", "1"]) for i in range(rng.randrange(3))}
    specs = []
    for i in range(rng.randrange(5)):
        code = rng.choice(list(DTYPES))
        shape = [rng.choice([0, 1, 2, 3, 4, 8, 16]) for _ in range(rng.randrange(4))]
        name = rng.choice([f"layer{i}.weight", f"layer{i}.bias", f"t{i}", f"emb{i}.weight"])
        specs.append((name, code, shape))
    if quantizable:
        specs.append(("proj.weight", rng.choice(["F32", "F16", "BF16"]), [rng.choice([1, 8]), 32]))
    rng.shuffle(specs)
    data = b""
    for name, code, shape in specs:
        numel = 1
        for d in shape:
            numel *= d
        blob = _tensor_bytes(rng, code, numel)
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    return header, data


def _entries(header: dict) -> list[str]:
    return [k for k in header if k != "__metadata__"]


def _one(rng: random.Random, kind: int, header: dict, names: list, data: bytes, raw_suffix: bytes, duplicate):
    """One corruption of kind `kind` (0-15)."""
    entry = header[rng.choice(names)] if names else None
    if kind == 0 and entry:
        entry["data_offsets"][rng.randrange(2)] += rng.choice([-8, -1, 1, 4])
    elif kind == 1 and len(names) > 1:
        a, b = rng.sample(names, 2)
        header[b]["data_offsets"] = list(header[a]["data_offsets"])
    elif kind == 2 and entry and entry["shape"]:
        entry["shape"][rng.randrange(len(entry["shape"]))] = rng.choice([-1, -4, 2.0, True, "2", None])
    elif kind == 3 and entry:
        entry["data_offsets"] = rng.choice([[0], [0, 1, 2], [0.0, 4.0], ["0", "4"], None, [-4, 0]])
    elif kind == 4 and names:
        duplicate = rng.choice(names)
    elif kind == 5:
        data += bytes(rng.randrange(1, 9))
    elif kind == 6 and data:
        data = data[: rng.randrange(len(data))]
    elif kind == 7 and entry:
        entry["dtype"] = rng.choice(["Q4", "f32", "F4", "C64", "F8_E8M0", "", 3])
    elif kind == 8 and entry:
        del entry[rng.choice(["dtype", "shape", "data_offsets"])]
    elif kind == 9 and entry:
        entry["extra"] = {"ignored": [1, 2]}  # unknown fields are allowed
    elif kind == 10:
        header["__metadata__"] = rng.choice([{"a": 1}, None, [], "x", {"a": None}, {}])
    elif kind == 11 and names:
        header[rng.choice(names)] = rng.choice([[], "F32", 7, None])
    elif kind == 12:
        raw_suffix = rng.choice([b"   ", b" x", b"\xff", b"\n", b"}"])
    elif kind == 13 and entry and entry["shape"]:
        entry["shape"].append(rng.choice([0, 1, 2]))
    elif kind == 14 and len(names) > 1:  # swap two tensors' places: still a valid file
        a, b = rng.sample(names, 2)
        header[a], header[b] = header[b], header[a]
    elif kind == 15:
        header["__metadata__"] = {"v": "NaN", "w": "a\nb"}
    return data, raw_suffix, duplicate


def _mutate(rng: random.Random, header: dict, data: bytes) -> tuple[bytes, bytes]:
    """Zero to two random corruptions; returns (header bytes, data bytes)."""
    raw_suffix = b""
    names = _entries(header)
    duplicate = None
    for _ in range(rng.choice([0, 1, 1, 2])):
        # an earlier mutation may have broken this entry's structure already: then it stays broken
        with contextlib.suppress(TypeError, KeyError, IndexError, AttributeError):
            data, raw_suffix, duplicate = _one(
                rng, rng.randrange(16), header, names, data, raw_suffix, duplicate
            )
    raw = json.dumps(header).encode()
    if duplicate is not None:
        text = json.dumps({duplicate: header[duplicate]})[1:-1].encode()
        raw = raw[:-1] + (b", " if len(header) else b"") + text + b"}"
    raw += raw_suffix
    if rng.random() < 0.3:
        raw += b" " * (-len(raw) % 8)
    return raw, data


def _file(rng: random.Random, quantizable: bool = False) -> bytes:
    header, data = _valid(rng, quantizable)
    raw, data = _mutate(rng, header, data)
    length = len(raw)
    if rng.random() < 0.05:
        length += rng.choice([-3, -1, 1, 9])
    out = struct.pack("<Q", max(length, 0)) + raw + data
    if rng.random() < 0.05:
        out = out[: rng.randrange(len(out) + 1)]
    return out


def _reference(path: Path) -> tuple[dict, dict] | Exception:
    try:
        with safe_open(str(path), framework="pt") as f:
            names = f.keys()
            return {k: f.get_tensor(k) for k in names}, f.metadata() or {}
    except Exception as exc:  # the reference's errors are of several types
        return exc


def _raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _generated(tmp_path: Path, n: int, seed: int, quantizable: bool = False) -> list[Path]:
    rng = random.Random(seed)
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = tmp_path / f"f{i:03d}.safetensors"
        path.write_bytes(_file(rng, quantizable))
        paths.append(path)
    return paths


def test_reader_agrees_with_the_reference_or_refuses_in_one_sentence(tmp_path):
    counts = {"read": 0, "refused": 0, "stricter": 0}
    for path in _generated(tmp_path, N_READER, seed=18):
        reference = _reference(path)
        try:
            ours = SafetensorsFile(path)
            tensors = ours.read_all()
        except BadInput as exc:
            message = str(exc)
            assert "\n" not in message and str(path) in message, message
            if isinstance(reference, Exception):
                counts["refused"] += 1
            else:
                assert any(s in message for s in STRICTER), f"{path.name}: reference reads it; {message}"
                counts["stricter"] += 1
            continue
        assert not isinstance(reference, Exception), f"{path.name}: reference refuses it: {reference}"
        ref_tensors, ref_meta = reference
        assert ours.metadata == ref_meta, path.name
        assert list(tensors) == list(ours.tensors) and set(tensors) == set(ref_tensors), path.name
        for name, t in tensors.items():
            ref = ref_tensors[name]
            assert (t.dtype, tuple(t.shape)) == (ref.dtype, tuple(ref.shape)), (path.name, name)
            assert _raw(t) == _raw(ref), (path.name, name)
        counts["read"] += 1
    # the generator reaches every outcome, not only refusals
    assert counts["read"] > N_READER // 5 and counts["refused"] > N_READER // 5, counts
    assert counts["stricter"] > 0, counts


def test_quantize_cli_on_fuzzed_files_exits_0_or_2_and_leaves_nothing(tmp_path):
    runner = CliRunner()
    outcomes = {0: 0, 2: 0}
    for path in _generated(tmp_path / "in", N_CLI, seed=7, quantizable=True):
        parent = tmp_path / f"work-{path.stem}"
        parent.mkdir()
        out = parent / "out"
        result = runner.invoke(main, ["quantize", str(path), "--no-eval", "-q", "-o", str(out)])
        assert result.exit_code in (0, 2), (path.name, result.exit_code, result.output, result.exception)
        outcomes[result.exit_code] += 1
        if result.exit_code == 2:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), (path.name, result.stderr)
            assert list(parent.iterdir()) == [], path.name
        else:
            assert sorted(p.name for p in parent.iterdir()) == ["out"], path.name
            SafetensorsFile(out / "model.safetensors")  # what it wrote reads back
    assert outcomes[0] > 0 and outcomes[2] > 0, outcomes


@pytest.mark.parametrize(
    ("entries", "data", "message"),
    [
        ({"a": ([4], [0, 16]), "b": ([2], [8, 16])}, 16, "overlap"),
        ({"a": ([2], [8, 16])}, 16, "8 bytes before tensor 'a'"),
        ({"a": ([4], [0, 16])}, 20, "4 bytes after its last tensor"),
        ({"a": ([-4], [0, 16])}, 16, "non-negative integers"),
        ({"a": ([4.0], [0, 16])}, 16, "non-negative integers"),
        ({"a": ([4], [0, 16.0])}, 16, "two non-negative integers"),
    ],
)
def test_each_layout_fault_is_refused_like_the_reference(tmp_path, entries, data, message):
    header = {n: {"dtype": "F32", "shape": s, "data_offsets": o} for n, (s, o) in entries.items()}
    raw = json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data)
    assert isinstance(_reference(path), Exception)
    with pytest.raises(BadInput, match=message):
        SafetensorsFile(path)


def test_duplicate_keys_and_non_utf8_headers_are_refused(tmp_path):
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    path = tmp_path / "dup.safetensors"
    raw = f'{{"a": {entry}, "a": {entry}}}'.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(BadInput, match="key 'a' twice"):
        SafetensorsFile(path)
    raw = b'{"\xff": ' + entry.encode() + b"}"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    assert isinstance(_reference(path), Exception)
    with pytest.raises(BadInput, match="not valid JSON"):
        SafetensorsFile(path)
