"""`compress run`'s step cache (README "Step cache") is invalidated by exactly what produced a step:
the input's bytes, the settings of every pass up to it, the calibration when a pass up to it used data,
and the compress version. Changing any of them re-runs that step and the ones after it, and nothing
before it; changing the evaluation re-runs nothing. Reuse alone is covered in test_run.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import compress as cz
from compress.cli import main

TEXT = " ".join(f"the quick brown fox number {i} jumps over the lazy dog." for i in range(200))

# passes[0] needs no data (magnitude), passes[1] does (wanda scores |W| by the inputs' norms).
BASE = {"sparsity0": 0.25, "sparsity1": 0.25, "samples": 4, "seed": 0, "limit": 8}


def recipe_text(**changes) -> str:
    s = {**BASE, **changes}
    return f"""version: 1
passes:
  - {{kind: prune, pattern: unstructured, sparsity: {s["sparsity0"]}, targets: {{include: ['*mlp*']}}}}
  - {{kind: prune, pattern: unstructured, method: wanda, sparsity: {s["sparsity1"]},
     targets: {{include: ['*self_attn*']}}}}
calibration: {{data: calib.txt, samples: {s["samples"]}, seq_len: 32, seed: {s["seed"]}}}
evaluate: {{limit: {s["limit"]}, devices: [cpu]}}
"""


def run_steps(folder: Path, model: Path, cache: Path, out: str, **changes) -> tuple[list[int], list[int]]:
    """Run the recipe from `folder`, which holds the calibration text under the name the recipe gives
    (relative, so that every test's copy has the same calibration settings, hence the same keys)."""
    (folder / "calib.txt").write_text(TEXT)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        recipe = cz.Recipe.loads(recipe_text(**changes))
        result = cz.run_recipe(recipe, model, folder / out, cache=cache, evaluate=False)
    return result.steps_run, result.steps_reused


@pytest.fixture(scope="module")
def warm(tmp_path_factory, _tiny_llama_src) -> tuple[Path, Path]:
    """The base recipe run once into a cache, kept for the module: (model folder, cache)."""
    root = tmp_path_factory.mktemp("warm-cache")
    model = root / "llama"
    shutil.copytree(_tiny_llama_src.parent, model)
    assert run_steps(root, model / "model.safetensors", root / "cache", "out") == ([0, 1], [])
    return model, root / "cache"


@pytest.fixture
def cached(warm, tmp_path) -> tuple[Path, Path]:
    """A private copy of the warm cache and of the model it was made from."""
    model, cache = warm
    shutil.copytree(model, tmp_path / "llama")
    shutil.copytree(cache, tmp_path / "cache")
    return tmp_path / "llama" / "model.safetensors", tmp_path / "cache"


def test_the_same_recipe_reuses_every_step(cached, tmp_path):
    model, cache = cached
    assert run_steps(tmp_path, model, cache, "again") == ([], [0, 1])


@pytest.mark.parametrize(
    ("change", "ran", "reused"),
    [
        ({"sparsity1": 0.5}, [1], [0]),  # a later pass's setting: only that pass
        ({"sparsity0": 0.5}, [0, 1], []),  # the first pass's setting: it and everything after it
        ({"samples": 3}, [1], [0]),  # calibration: the data-free pass before the data pass is kept
        ({"seed": 1}, [1], [0]),
        ({"limit": 4}, [], [0, 1]),  # the evaluation is not part of any step
    ],
    ids=["later-pass-setting", "first-pass-setting", "calib-samples", "calib-seed", "evaluation"],
)
def test_a_change_reruns_exactly_the_steps_it_affects(cached, tmp_path, change, ran, reused):
    model, cache = cached
    assert run_steps(tmp_path, model, cache, "out", **change) == (ran, reused)
    assert run_steps(tmp_path, model, cache, "again", **change) == ([], [0, 1])  # and is cached in turn


def test_calibration_does_not_invalidate_a_recipe_of_data_free_passes(tiny_llama, tmp_path):
    recipe = tmp_path / "r.yaml"
    (tmp_path / "calib.txt").write_text(TEXT)
    only_magnitude = "  - {kind: prune, pattern: unstructured, sparsity: 0.25}\n"
    calibration = "calibration: {{data: {}, samples: {}, seq_len: 32}}\n"
    cache = tmp_path / "cache"
    recipe.write_text("passes:\n" + only_magnitude + calibration.format(tmp_path / "calib.txt", 4))
    first = cz.run_recipe(recipe, tiny_llama, tmp_path / "a", cache=cache, evaluate=False)
    recipe.write_text("passes:\n" + only_magnitude + calibration.format("wiki-train", 3))
    second = cz.run_recipe(recipe, tiny_llama, tmp_path / "b", cache=cache, evaluate=False)
    assert (first.steps_run, second.steps_run, second.steps_reused) == ([0], [], [0])


def test_changed_input_bytes_rerun_every_step(cached, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    model, cache = cached
    with safe_open(str(model), "pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        metadata = f.metadata()
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 1.5  # a tensor no pass changes
    save_file(tensors, str(model), metadata=metadata)
    assert run_steps(tmp_path, model, cache, "out") == ([0, 1], [])


def pretend_compress_version(monkeypatch, version: str) -> None:
    """Make this process look like another compress release.

    There is no public way to do this: the version is the package's. It is read from
    compress._version (a private name) by every module that binds `__version__` at import; patch that
    and every compress module that already holds a copy, so the test does not depend on which module
    builds the cache key. (If the key ever reads importlib.metadata instead, patch that here.)"""
    import compress._version

    real = compress._version.__version__
    for name, module in list(sys.modules.items()):
        ours = name == "compress" or name.startswith("compress.")
        if ours and getattr(module, "__version__", None) == real:
            monkeypatch.setattr(module, "__version__", version)
    assert compress._version.__version__ == version


def test_changed_calibration_file_content_reruns_the_data_pass(tiny_llama, tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text(TEXT)
    recipe = cz.Recipe.loads(recipe_text().replace("calib.txt", str(calib)))
    cache = tmp_path / "cache"
    assert cz.run_recipe(recipe, tiny_llama, tmp_path / "a", cache=cache, evaluate=False).steps_run == [0, 1]
    calib.write_text(TEXT.replace("fox", "cat"))
    result = cz.run_recipe(recipe, tiny_llama, tmp_path / "b", cache=cache, evaluate=False)
    assert (result.steps_run, result.steps_reused) == ([1], [0])


def test_another_compress_version_reruns_every_step(cached, tmp_path, monkeypatch):
    model, cache = cached
    import compress.runner  # noqa: F401 (loaded before the patch, so its copy of the version is patched too)

    pretend_compress_version(monkeypatch, "99.0.0")
    assert run_steps(tmp_path, model, cache, "out") == ([0, 1], [])


def test_dry_run_names_the_steps_a_change_invalidates(cached, tmp_path, monkeypatch):
    model, cache = cached
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(samples=3))
    (tmp_path / "calib.txt").write_text(TEXT)
    monkeypatch.chdir(tmp_path)
    args = ["run", str(recipe), str(model), "-o", str(tmp_path / "out"), "--cache", str(cache), "--dry-run"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stderr.splitlines() if "prune" in line]
    assert len(rows) == 2 and "reused" in rows[0] and "to run" in rows[1], result.stderr
    assert not (tmp_path / "out").exists()


def test_gptq_after_a_prune_step_runs(tiny_llama, tmp_path):
    (tmp_path / "calib.txt").write_text(TEXT)
    recipe = cz.Recipe.loads(
        "passes:\n"
        "  - {kind: prune, pattern: unstructured, sparsity: 0.25}\n"
        "  - {kind: quantize, scheme: int4, method: gptq, group_size: 32}\n"
        f"calibration: {{data: {tmp_path / 'calib.txt'}, samples: 4, seq_len: 32}}\n"
    )
    result = cz.run_recipe(recipe, tiny_llama, tmp_path / "out", cache=tmp_path / "cache", evaluate=False)
    assert result.steps_run == [0, 1]
