"""Same settings, same output, whichever door: `compress quantize`, the Python API (`cz.quantize(...).save`)
and `compress run` of the equivalent one-pass recipe write the same `compress.*` header (time and memory
statistics aside) and identical tensors; a recipe's `calibration:` section calibrates alike through
`compress run`, `cz.apply` and `cz.sweep` (issue 14, "One route")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import compress as cz
from compress.cli import main

TEXT = " ".join(f"the quick brown fox number {i} jumps over the lazy dog." for i in range(200))
# `compress run` evaluates; this evaluation is quick and does not touch the checkpoint.
QUICK_EVAL = "evaluate: {task: fidelity, limit: 2, devices: []}\n"
VOLATILE = ("seconds", "peak_rss_mb")  # statistics of the run, not of the result


def cli(*args: str) -> None:
    # Module-scoped fixtures run before the per-test COMPRESS_HISTORY / COMPRESS_CACHE are set: opt out.
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def header(folder: Path) -> tuple[dict, dict]:
    """The compress.* metadata (values parsed from JSON where they are JSON) and the tensors."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        metadata = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (no __iter__)
    parsed = {}
    for key, value in metadata.items():
        if key.startswith("compress."):
            try:
                parsed[key] = json.loads(value)
            except json.JSONDecodeError:
                parsed[key] = value
    return parsed, tensors


def without_volatile(meta: dict) -> dict:
    out = dict(meta)
    if isinstance(out.get("compress.stats"), dict):
        out["compress.stats"] = {k: v for k, v in out["compress.stats"].items() if not k.endswith(VOLATILE)}
    return out


def assert_same_tensors(folders: dict[str, Path]) -> None:
    import torch

    loaded = {door: header(folder)[1] for door, folder in folders.items()}
    first, *rest = loaded
    for door in rest:
        assert set(loaded[door]) == set(loaded[first]), (first, door)
        for name, tensor in loaded[first].items():
            assert torch.equal(loaded[door][name], tensor), (first, door, name)


def assert_same_values(folders: dict[str, Path], keys: str = "all") -> None:
    """Equal values (volatile statistics aside), for every key (`keys="all"`: the key sets must be
    equal too) or only for the keys every door wrote (`keys="shared"`)."""
    metas = {door: without_volatile(header(folder)[0]) for door, folder in folders.items()}
    first, *rest = metas
    for door in rest:
        if keys == "all":
            assert set(metas[door]) == set(metas[first]), (first, door, set(metas[door]) ^ set(metas[first]))
        for key in set(metas[door]) & set(metas[first]):
            assert metas[door][key] == metas[first][key], (first, door, key)


def llama_copy(src: Path, folder: Path) -> Path:
    shutil.copytree(src.parent, folder)
    return folder / "model.safetensors"


@pytest.fixture(scope="module")
def gptq_doors(tmp_path_factory, _tiny_llama_src) -> dict[str, Path]:
    """GPTQ INT4 g32 on 4 x 32 tokens of a text file, through each door."""
    root = tmp_path_factory.mktemp("gptq-doors")
    model = llama_copy(_tiny_llama_src, root / "llama")
    text = root / "calib.txt"
    text.write_text(TEXT)
    cli(
        "quantize", str(model), "--scheme", "int4", "--group-size", "32", "--method", "gptq",
        "--calib", str(text), "--calib-samples", "4", "--calib-seq-len", "32",
        "-o", str(root / "a"), "--no-eval", "-q",
    )  # fmt: skip
    cz.quantize(
        model,
        scheme="int4",
        group_size=32,
        method="gptq",
        data=str(text),
        calib={"samples": 4, "seq_len": 32},
    ).save(root / "b")
    recipe = root / "r.yaml"
    recipe.write_text(
        "version: 1\npasses:\n  - {kind: quantize, scheme: int4, group_size: 32, method: gptq}\n"
        f"calibration: {{data: {text}, samples: 4, seq_len: 32}}\n" + QUICK_EVAL
    )
    cli("run", str(recipe), str(model), "-o", str(root / "c"), "--no-cache", "--no-history", "-q")
    return {"compress quantize": root / "a", "cz.quantize": root / "b", "compress run": root / "c"}


@pytest.fixture(scope="module")
def int8_doors(tmp_path_factory, _tiny_llama_src) -> dict[str, Path]:
    """INT8 RTN: streamed tensor by tensor by the CLI and `compress run`, built in memory by the API."""
    root = tmp_path_factory.mktemp("int8-doors")
    model = llama_copy(_tiny_llama_src, root / "llama")
    cli("quantize", str(model), "-o", str(root / "a"), "--no-eval", "-q")
    cz.quantize(model, scheme="int8").save(root / "b")
    recipe = root / "r.yaml"
    recipe.write_text("version: 1\npasses:\n  - {kind: quantize, scheme: int8}\n" + QUICK_EVAL)
    cli("run", str(recipe), str(model), "-o", str(root / "c"), "--no-cache", "--no-history", "-q")
    return {"compress quantize": root / "a", "cz.quantize": root / "b", "compress run": root / "c"}


def test_gptq_writes_the_same_header_and_tensors_through_every_door(gptq_doors):
    assert_same_tensors(gptq_doors)
    assert_same_values(gptq_doors, keys="all")
    meta = header(gptq_doors["compress run"])[0]
    (recorded,) = meta["compress.recipe"]
    assert recorded["method"] == "gptq" and recorded["calibration"]["samples"] == 4
    assert recorded["calibration"]["seq_len"] == 32
    assert meta["compress.stats"]["quantize.calibration_tokens"] == 4 * 32


def test_int8_rtn_writes_the_same_tensors_and_header_values_through_every_door(int8_doors):
    assert_same_tensors(int8_doors)
    assert_same_values(int8_doors, keys="shared")
    assert header(int8_doors["compress run"])[0]["compress.recipe"][0]["scheme"] == "int8"


def test_int8_rtn_writes_the_same_header_keys_through_every_door(int8_doors):
    assert_same_values(int8_doors, keys="all")


@pytest.fixture
def npz_model(tiny_llama, tmp_path) -> tuple[Path, Path]:
    """tiny_llama without its tokenizer, and an .npz of ready inputs: a door that ignored the recipe's
    calibration section would fall back to the pass's own default (wiki-train, 128 x 512 tokens) and
    fail at once for want of a tokenizer, instead of calibrating on the wrong data for half a minute."""
    for item in tiny_llama.parent.iterdir():
        if item.name.startswith("tokenizer"):
            item.unlink()
    data = tmp_path / "calib.npz"
    np.savez(data, input_ids=np.random.default_rng(0).integers(5, 100, size=(8, 32)))
    return tiny_llama, data


def calibration_recipe(tmp_path: Path, data: Path) -> Path:
    recipe = tmp_path / "calibrated.yaml"
    recipe.write_text(
        "version: 1\npasses:\n  - {kind: quantize, scheme: int4, group_size: 32, method: gptq}\n"
        f"calibration: {{data: {data}, samples: 4, seed: 3}}\n" + QUICK_EVAL
    )
    return recipe


def drawn(recipe: list[dict], stats: dict) -> dict:
    """The calibration a result records: the pass's settings and the statistics of what was drawn."""
    (quantize,) = recipe
    return {
        "calibration": quantize["calibration"],
        **{k: v for k, v in stats.items() if k.startswith("quantize.calibration")},
    }


def test_a_recipe_calibrates_alike_through_run_apply_and_sweep(npz_model, tmp_path):
    model, data = npz_model
    recipe = calibration_recipe(tmp_path, data)
    cli("run", str(recipe), str(model), "-o", str(tmp_path / "run"), "--no-cache", "-q")
    meta = header(tmp_path / "run")[0]
    by_run = drawn(meta["compress.recipe"], meta["compress.stats"])
    assert by_run["calibration"]["samples"] == 4 and by_run["calibration"]["seed"] == 3
    assert by_run["quantize.calibration_samples"] == 4
    swept = cz.sweep(model, [recipe], task="fidelity", limit=2, devices=(), progress=False)[0]
    assert drawn(swept.artifact.recipe, swept.artifact.stats) == by_run
    applied = cz.apply(model, cz.Recipe.load(recipe))
    assert drawn(applied.recipe, applied.stats) == by_run


def test_the_recorded_calibration_is_what_was_drawn(npz_model, tmp_path):
    model, data = npz_model
    cli("run", str(calibration_recipe(tmp_path, data)), str(model), "-o", str(tmp_path / "run"), "-q")
    meta = header(tmp_path / "run")[0]
    calib = meta["compress.recipe"][0]["calibration"]
    assert meta["compress.stats"]["quantize.calibration_tokens"] == 4 * 32  # what was drawn
    assert calib["samples"] * calib["seq_len"] == meta["compress.stats"]["quantize.calibration_tokens"]
