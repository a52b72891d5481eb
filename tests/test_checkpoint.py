"""Reading, writing and validating safetensors files; atomic outputs."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file

from compress.checkpoint import SafetensorsFile, StreamingWriter, atomic_output_dir, save_tensors
from compress.errors import BadInput


def test_round_trip_every_dtype_and_readable_by_safetensors(tmp_path):
    tensors = {
        "f32": torch.randn(3, 4),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 2).bfloat16(),
        "i8": torch.randint(-128, 127, (7,), dtype=torch.int8),
        "u8": torch.randint(0, 255, (2, 3), dtype=torch.uint8),
        "i64": torch.arange(4),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "t.safetensors"
    save_tensors(path, tensors, {"k": "v"})
    ours = SafetensorsFile(path)
    assert ours.metadata == {"k": "v"}
    reference = load_file(str(path))
    for name, t in tensors.items():
        assert torch.equal(ours.read(name), t), name
        assert torch.equal(reference[name], t), name


def test_streaming_writer_checks_declared_order_and_shapes(tmp_path):
    path = tmp_path / "s.safetensors"
    writer = StreamingWriter(path, {"k": "v"})
    writer.declare("a", "F32", (2,))
    writer.declare("b", "I8", (3,))
    with pytest.raises(RuntimeError, match="expected tensor 'a', got 'b'"):
        writer.write("b", torch.zeros(3, dtype=torch.int8))
    with pytest.raises(RuntimeError, match="'a' does not match its declared shape"):
        writer.write("a", torch.zeros(3))
    with pytest.raises(RuntimeError, match="'a' does not match its declared shape or dtype"):
        writer.write("a", torch.zeros(2, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="declare"):
        writer.declare("c", "F32", (1,))  # the header is already written
    a, b = torch.tensor([1.5, -2.0]), torch.tensor([1, -2, 3], dtype=torch.int8)
    writer.write("a", a)  # the refused calls wrote nothing: the file is still well formed
    writer.write("b", b)
    writer.close()
    back = load_file(str(path))
    assert set(back) == {"a", "b"} and torch.equal(back["a"], a) and torch.equal(back["b"], b)
    assert SafetensorsFile(path).metadata == {"k": "v"}
    short = StreamingWriter(tmp_path / "short.safetensors")
    short.declare("a", "F32", (2,))
    with pytest.raises(RuntimeError, match="1 declared tensors were never written"):
        short.close()


def _write_header(path, header: bytes, data: bytes = b"") -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated"),
        (b"\x05\x00", "truncated"),
        (struct.pack("<Q", 10**12), "implausible header length"),
        (struct.pack("<Q", 100) + b"{}", "header runs past the end"),
        (struct.pack("<Q", 4) + b"nope", "not valid JSON"),
        (b"PK\x03\x04" + b"\x00" * 64, "pickle"),
        (b"\x80\x02" + b"\x00" * 64, "pickle"),
    ],
)
def test_bad_files_give_one_clear_sentence(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=message) as info:
        SafetensorsFile(path)
    assert str(path) in str(info.value)


def test_truncated_data_section_is_detected(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"w": torch.randn(100, 100)})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BadInput, match="truncated"):
        SafetensorsFile(path)


def test_offsets_that_disagree_with_shape_are_corrupt(tmp_path):
    path = tmp_path / "t.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    _write_header(path, header, b"\x00" * 16)
    with pytest.raises(BadInput, match="offsets"):
        SafetensorsFile(path)


def test_pickle_suffix_and_missing_and_folder(tmp_path):
    pt = tmp_path / "model.bin"
    torch.save({"w": torch.zeros(2)}, pt)
    with pytest.raises(BadInput, match="pickle"):
        SafetensorsFile(pt)
    with pytest.raises(BadInput, match="no such file"):
        SafetensorsFile(tmp_path / "absent.safetensors")
    with pytest.raises(BadInput, match="is a folder"):
        SafetensorsFile(tmp_path)


def test_atomic_output_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError), atomic_output_dir(out) as stage:
        (stage / "model.safetensors").write_bytes(b"half")
        raise ValueError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_replaces_its_own_folder_as_a_whole(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as stage:
        save_tensors(stage / "model.safetensors", {"w": torch.zeros(2)}, {"compress.format_version": "1"})
        (stage / "model.onnx").write_text("stale graph")
    with atomic_output_dir(out) as stage:
        save_tensors(stage / "model.safetensors", {"w": torch.ones(2)}, {"compress.format_version": "1"})
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]  # the stale graph is gone
    assert torch.equal(SafetensorsFile(out / "model.safetensors").read("w"), torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock file, no old folder


def test_atomic_output_dir_refuses_a_folder_it_did_not_write_and_leaves_it_alone(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "model.safetensors").write_text("not even safetensors")
    refused = pytest.raises(BadInput, match=r"did not write \(model.safetensors, notes.txt\)")
    with refused, atomic_output_dir(out):
        raise AssertionError("never reached")
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_atomic_output_dir_replaces_an_empty_folder(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    with atomic_output_dir(out) as stage:
        (stage / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new"


def test_a_header_length_that_starts_like_a_pickle_is_still_safetensors(tmp_path):
    import json
    import struct

    from compress.checkpoint import SafetensorsFile

    raw = json.dumps({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    raw += b" " * (0x480 - len(raw))  # the length's bytes are 80 04: a pickle's protocol-4 opening
    path = tmp_path / "a.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0")
    assert list(SafetensorsFile(path).tensors) == ["t"]


def test_a_writer_that_owns_a_few_files_replaces_only_those(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_text("the user's checkpoint")
    (model / "model.onnx").write_text("old graph")
    (model / "model.onnx.data").write_text("old weights, stale once the new graph has none")
    with atomic_output_dir(model, owns=("model.onnx", "model.onnx.data")) as stage:
        (stage / "model.onnx").write_text("new graph")
    assert sorted(p.name for p in model.iterdir()) == ["model.onnx", "model.safetensors"]
    assert (model / "model.onnx").read_text() == "new graph"
    assert (model / "model.safetensors").read_text() == "the user's checkpoint"
