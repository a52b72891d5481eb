"""`compress quantize` (RTN) streams: its peak memory follows the largest tensor, not the checkpoint.

README ("Round-to-nearest needs no forward pass, so `quantize` streams the checkpoint tensor by tensor:
peak memory stays near the largest tensor"). The command runs in a subprocess that first quantizes a
tiny checkpoint (so every module the command imports is loaded and its caches are warm),
then resets its own high-water mark (VmHWM, via /proc/self/clear_refs) and quantizes a checkpoint of
84 MB whose largest tensor is 1 MB. The growth of the peak over the resident size just before is
what the streaming road costs; loading the checkpoint (or memory-mapping and touching all of it)
costs at least its size.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

HIDDEN, INTERMEDIATE, LAYERS = 256, 1024, 20  # largest tensor: 1024 x 256 float32 = 1 MiB; 84 MB in all
MIB = 2**20

# Measured on this project's machine (torch 2.13 CPU, glibc), growth of the peak: 16.5 MiB on this
# config'd checkpoint, 16.0 MiB on the bare one. Most of it does not depend on the tensors: hashing the
# input (for the header) reads it in 8 MiB blocks, two of them alive at once. A tensor in flight costs up
# to ~8 copies of itself (the bytes read, the float tensor, codes, the dequantized copy and the error for
# the per-tensor SQNR): 33 MiB with a 4 MiB largest tensor, 132 MiB with 16 MiB. The bound leaves room
# for both and stays far below the 80 MiB that loading the checkpoint would add (measured: building the
# model in memory instead grew it by 162 MiB, reading every tensor up front by 89 MiB).
BOUND_TENSORS = 12
ALLOWANCE_MIB = 16

PROBE = r"""
import json, sys
from compress.cli import main
from compress.memory import release_free_memory


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024


def quantize(src, out):
    try:
        main(["quantize", src, "-o", out, "--no-eval", "-q"], standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise


def growth(src, out):
    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
    except OSError:
        pass  # the warm-up's peak then counts too: only ever more growth, never less
    before = status("VmRSS")
    quantize(src, out)
    return status("VmHWM") - before


small, big_llama, big_bare, out = sys.argv[1:]
quantize(small, out + "/warm")  # imports everything the command needs, bare checkpoints included
print(json.dumps({"config": growth(big_llama, out + "/llama"), "bare": growth(big_bare, out + "/bare")}))
"""


def write_wide_llama(small: Path, folder: Path) -> Path:
    """A Llama checkpoint of LAYERS blocks next to `small`'s tokenizer and config, sizes changed."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    for item in small.parent.iterdir():
        if item.name != "model.safetensors":
            (folder / item.name).write_bytes(item.read_bytes())
    config = json.loads((small.parent / "config.json").read_text())
    heads = HIDDEN // 64
    config.update(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=64,
    )
    (folder / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(0)
    vocab = config["vocab_size"]
    tensors = {"model.embed_tokens.weight": torch.randn(vocab, HIDDEN, generator=g) * 0.02}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for n in "qkvo":
            tensors[f"{p}self_attn.{n}_proj.weight"] = torch.randn(HIDDEN, HIDDEN, generator=g) * 0.02
        tensors[p + "mlp.gate_proj.weight"] = torch.randn(INTERMEDIATE, HIDDEN, generator=g) * 0.02
        tensors[p + "mlp.up_proj.weight"] = torch.randn(INTERMEDIATE, HIDDEN, generator=g) * 0.02
        tensors[p + "mlp.down_proj.weight"] = torch.randn(HIDDEN, INTERMEDIATE, generator=g) * 0.02
        tensors[p + "input_layernorm.weight"] = torch.ones(HIDDEN)
        tensors[p + "post_attention_layernorm.weight"] = torch.ones(HIDDEN)
    tensors["model.norm.weight"] = torch.ones(HIDDEN)
    path = folder / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)")
def test_streaming_quantize_peak_memory_follows_the_largest_tensor(tiny_llama, tmp_path):
    from safetensors import safe_open

    big = write_wide_llama(tiny_llama, tmp_path / "wide")
    bare = tmp_path / "wide-bare" / "weights.safetensors"  # the same bytes with no config beside them
    bare.parent.mkdir()
    os.link(big, bare)
    with safe_open(str(big), "pt") as f:
        largest = max(math.prod(f.get_slice(n).get_shape()) * 4 for n in f.keys())  # noqa: SIM118 (float32)
    size = big.stat().st_size
    assert largest == MIB and size > 80 * largest  # the ratio the test relies on
    env = dict(os.environ)
    # glibc raises its mmap threshold after the first large free, and then serves later 1 MiB
    # buffers from the heap, where fragmentation adds 0-40 MiB at random; a fixed threshold makes
    # the measurement repeatable (other C libraries ignore the variable).
    env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    args = [str(p) for p in (tiny_llama, big, bare, tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    growth = json.loads(done.stdout.strip().splitlines()[-1])
    bound = BOUND_TENSORS * largest + ALLOWANCE_MIB * MIB
    for kind, grown in growth.items():
        assert grown < bound, (
            f"{kind}: peak grew by {grown / MIB:.1f} MiB quantizing a {size / MIB:.0f} MiB checkpoint "
            f"whose largest tensor is {largest / MIB:.0f} MiB (bound {bound / MIB:.0f} MiB): "
            "the command no longer streams tensor by tensor"
        )
    assert (tmp_path / "out" / "llama" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "bare" / "model.safetensors").is_file()
