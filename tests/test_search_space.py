"""compress search without Ray: the space file and its errors, points <-> recipes, the shipped recipes
as seeds, layer sensitivity, the choice through the gate, a worker on a node the files were shipped to,
and bad input on the command line (one sentence, exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from compress.cli import main
from compress.errors import BadInput
from compress.recipe import Evaluation, Recipe
from compress.search.points import Context, Fixed, effective, point_of, recipe_key, recipe_of
from compress.search.space import SearchSpace
from compress.search.variants import Choice, Range

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "recipes" / "search" / "default.yaml"
CTX = Context(teacher="/models/m/model.safetensors", evaluation=Evaluation(), sensitive=("a", "b", "c"))

TINY_SPACE = """\
version: 1
name: tiny
seeds: [seed-int8.yaml]
calibration: {data: wiki-train, samples: 4, seq_len: 32}
prune:
  optional: true
  variants:
    neurons: {pattern: neurons, method: magnitude, sparsity: [0.25, 0.5]}
distill:
  optional: true
  variants:
    short: {data: wiki-train, training: {max_steps: 2, batch_size: 2, max_length: 32, val_max: 2}}
quantize:
  embeddings: [float, same]
  mixed_precision: {layers: [0, 2], measure: {samples: 2, seq_len: 32, group_size: 16}}
  variants:
    int8: {scheme: int8}
    int4: {scheme: int4, group_size: [16, 32], symmetric: [true, false]}
"""
NO_SEEDS = TINY_SPACE.replace("seeds: [seed-int8.yaml]\n", "")
SEED = "version: 1\nname: seed-int8\npasses:\n  - {kind: quantize, scheme: int8}\n"


def write_space(folder: Path, text: str = TINY_SPACE) -> Path:
    (folder / "seed-int8.yaml").write_text(SEED)
    path = folder / "space.yaml"
    path.write_text(text)
    return path


def test_every_shipped_recipe_is_a_point_of_the_default_space():
    space = SearchSpace.load(DEFAULT)
    shipped = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
    assert sorted(p.name for p in space.seeds) == shipped and len(shipped) >= 6
    for path in space.seeds:
        recipe = Recipe.load(path)
        point = point_of(space, recipe, CTX)
        again = recipe_of(space, Fixed(point), CTX, recipe.name)
        # the seed trial runs exactly the shipped passes, each with the calibration it really draws
        assert effective(again) == effective(recipe), path.name
    gptq = point_of(space, Recipe.load(ROOT / "recipes" / "int4-gptq.yaml"), CTX)
    assert gptq["quantize"] == "int4-gptq" and gptq["quantize.int4-gptq.group_size"] == 32


def test_a_recipe_outside_the_space_says_why(tmp_path):
    space = SearchSpace.loads(NO_SEEDS, "space.yaml")
    recipe = Recipe.loads("passes: [{kind: quantize, scheme: int4, group_size: 64}]", "r.yaml")
    with pytest.raises(
        BadInput, match=r"not a point of the search space.*no quantize variant gives int4 group 64"
    ):
        point_of(space, recipe, CTX)


def test_a_point_becomes_passes_with_recovery_mixed_precision_and_embeddings():
    space = SearchSpace.loads(NO_SEEDS, "space.yaml")
    point = {
        "prune": "neurons",
        "prune.neurons.sparsity": 0.5,
        "distill": "short",
        "quantize": "int4",
        "quantize.int4.group_size": 16,
        "quantize.int4.symmetric": False,
        "quantize.int4.layers": 2,
        "quantize.embeddings": "same",
    }
    recipe = recipe_of(space, Fixed(point), CTX, "t1")
    prune, distill, quantize = recipe.passes
    assert (prune.pattern, prune.sparsity) == ("neurons", 0.5)
    assert distill.teacher == CTX.teacher and distill.training.max_steps == 2
    assert quantize.keep_int8 == ("a", "b")  # the two most sensitive layers stay INT8
    assert quantize.targets.types == ("linear", "embedding") and quantize.group_size == 16
    int8 = recipe_of(space, Fixed({**point, "quantize": "int8", "quantize.int8.layers": 2}), CTX)
    assert int8.passes[-1].targets.exclude == ("a", "b")  # in an INT8 pass they stay float
    optional = SearchSpace.loads(NO_SEEDS.replace("quantize:\n", "quantize:\n  optional: true\n"))
    with pytest.raises(BadInput, match="leaves every step out"):
        recipe_of(optional, Fixed({"prune": "off", "quantize": "off"}), CTX)


def test_choices_and_ranges_are_what_the_space_says():
    space = SearchSpace.load(DEFAULT)
    sparsity = space.steps["prune"].variants["neurons"].settings["sparsity"]
    assert sparsity == Range(0.1, 0.5, 0.1) and sparsity.contains(0.3) and not sparsity.contains(0.35)
    method = space.steps["quantize"].variants["int4"].settings["method"]
    assert method == Choice(("rtn", "mse", "hqq"))
    assert space.needs_sensitivity and space.steps["distill"].optional


@pytest.mark.parametrize(
    ("change", "line", "words"),
    [
        (
            ("group_size: [16, 32]", "group_sise: [16, 32]"),
            18,
            ["unknown setting 'group_sise'", "group_size"],
        ),
        (("group_size: [16, 32]", "group_size: [16, 24]"), 18, ["group_size = 24", "power of two"]),
        (("sparsity: [0.25, 0.5]", "sparsity: {low: 0.6, high: 0.2}"), 8, ["low (0.6) must be below high"]),
        (
            ("sparsity: [0.25, 0.5]", "sparsity: {low: 0.1, high: 0.5, step: 0.3}"),
            8,
            ["step 0.3 does not divide"],
        ),
        (("sparsity: [0.25, 0.5]", "sparsity: []"), 8, ["empty list of choices"]),
        (("int8: {scheme: int8}", "int8: {scheme: {low: 1, high: 2}}"), 17, ["numeric setting only"]),
        (("embeddings: [float, same]", "embeddings: [float, int3]"), 14, ["unknown value 'int3'"]),
        (("  variants:\n    int8", "  variantz:\n    int8"), 16, ["unknown key 'variantz'"]),
        (
            ("optional: true\n  variants:\n    short", "optional: true\n  variants: {}\n  x:\n    short"),
            12,
            ["unknown key 'x'"],
        ),
    ],
)
def test_space_errors_name_the_file_and_line(tmp_path, change, line, words):
    text = TINY_SPACE.replace(*change)
    assert text != TINY_SPACE
    with pytest.raises(BadInput) as info:
        SearchSpace.load(write_space(tmp_path, text))
    message = str(info.value)
    assert f"space.yaml, line {line}:" in message, message
    assert all(w in message for w in words), message
    assert "\n" not in message


def test_an_empty_space_and_recovery_without_pruning_are_refused(tmp_path):
    with pytest.raises(BadInput, match="the search space is empty"):
        SearchSpace.loads("version: 1\nname: nothing\n", "space.yaml")
    with pytest.raises(BadInput, match=r"space.yaml, line 3: quantize.variants: the step is empty"):
        SearchSpace.loads("version: 1\nquantize:\n  variants: {}\n", "space.yaml")
    with pytest.raises(BadInput, match="runs after pruning"):
        SearchSpace.loads("distill: {variants: {a: {data: wiki-train}}}\nquantize: {variants: {q: {}}}\n")
    with pytest.raises(BadInput, match="teacher: leave it out"):
        SearchSpace.loads(
            "prune: {variants: {p: {}}}\ndistill: {variants: {a: {data: wiki-train, teacher: x}}}\n"
        )


def test_layer_sensitivity_ranks_a_heavy_tailed_layer_among_the_first(tiny_bert):
    import statistics

    import torch

    import compress as cz
    from compress.search.sensitivity import measure, ranked
    from compress.search.space import Measure

    model = cz.load(tiny_bert)
    target = "encoder.layer.0.attention.self.value"
    with torch.no_grad():  # heavy tails: INT4 groups of 16 keep the few large weights, lose the rest
        weight = model.module.get_submodule(target).weight
        g = torch.Generator().manual_seed(0)
        weight.copy_(
            torch.randn(weight.shape, generator=g)
            * torch.exp(2 * torch.randn(weight.shape, generator=g))
            / 100
        )
    rows = measure(model, Measure(samples=2, seq_len=32, group_size=16))
    linear = [n for n, m in model.module.named_modules() if isinstance(m, torch.nn.Linear)]
    assert sorted(r["layer"] for r in rows) == sorted(linear)
    sqnr = {r["layer"]: r["sqnr_db"] for r in rows}
    assert target in ranked(rows)[:2]  # it, or the layer that reads its output, is the most sensitive
    assert sqnr[target] < statistics.median(sqnr.values()) - 10
    assert rows[-1] == {"layer": "pooler.dense", "sqnr_db": float("inf")}  # not in the main output
    values = [r["sqnr_db"] for r in rows]
    assert values == sorted(values)  # most sensitive (lowest output SQNR) first


def _report(ratio: float, retention: float, speedup: float):
    from compress.eval.tasks import AccuracyResult
    from compress.report import Report

    row = {"device": "cpu", "runtime": "torch", "status": "ok", "speedup": speedup}
    accuracy = AccuracyResult("ok", "classification", "accuracy", retention, 1.0, retention)
    return Report(candidate={}, baseline={}, size={"ratio": ratio}, accuracy=accuracy, latency=[row])


def test_the_choice_goes_through_the_gate_rules():
    from compress.search.pick import choose, ci_rules
    from compress.search.result import Trial

    trials = [
        Trial(0, "small-lossy", "complete", {}, report=_report(0.10, 0.980, 0.8)),
        Trial(1, "small", "complete", {}, report=_report(0.15, 0.990, 0.9)),  # exactly at the floor: >=
        Trial(2, "fast", "complete", {}, report=_report(0.30, 0.995, 1.6)),
        Trial(3, "accurate", "complete", {}, report=_report(0.60, 1.010, 1.1)),
    ]
    key = ("cpu", "torch")
    assert choose(trials, 0.99, None, None, "size", key).name == "small"
    assert choose(trials, 0.99, None, None, "speed", key).name == "fast"
    assert choose(trials, 0.99, None, None, "retention", key).name == "accurate"
    assert choose(trials, 0.99, 0.5, 1.2, "size", key).name == "fast"
    with pytest.raises(
        BadInput, match=r"no finished trial .* size.ratio <= 0.05 .*small-lossy: .*below the minimum"
    ):
        choose(trials, 0.99, 0.05, None, "size", key)
    rules = ci_rules(trials[2].report, 0.99, key)
    assert {"metric": "size.ratio", "max": 0.3} in rules
    assert {"metric": "latency.cpu.torch.speedup", "min": 1.25} in rules  # 80% of 1.6, down to 0.05
    assert {"metric": "accuracy.retention", "min": 0.99} in rules


def test_a_worker_on_another_node_writes_the_shipped_files_once(tiny_bert, tmp_path, monkeypatch):
    from compress.search.worker import Setup, TrialWorker, materialize, payload

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "node"))
    (tmp_path / "node").mkdir()
    files = payload(tiny_bert, ())
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(files["model"])
    evaluation = Evaluation(task="classification", data="spam", limit=8, devices=("cpu",))
    evaluation = evaluation.replace(latency=evaluation.latency.replace(budget_s=0.1, min_rounds=2, warmup=0))
    setup = Setup(str(tiny_bert), "ab" * 32, (), "the driver's node", 1, evaluation.to_dict(), "search-t")
    worker = TrialWorker(setup, [files])  # not the driver's node: it writes the files, then loads them
    assert worker.info()["shipped"] and str(worker.folder).startswith(str(tmp_path / "node"))
    assert worker.model.checkpoint.parent == worker.folder / "model"
    assert materialize(files, worker.folder) == worker.folder  # a second worker there reuses the folder
    recipe = Recipe.loads("passes: [{kind: quantize, scheme: int8}]", "r").replace(evaluation=evaluation)
    outcome = worker.run(recipe.to_yaml())
    assert "report" in outcome, outcome
    assert outcome["report"]["size"]["measured"] == "file on disk"
    bad = worker.run(recipe.replace(passes=[recipe.passes[0].replace(targets=recipe.passes[0].targets.replace(
        include=("decoder.*",)))]).to_yaml())  # fmt: skip
    assert bad["bad_setting"] and "decoder.*" in bad["error"]
    assert worker.scratch.is_dir() and not list(worker.scratch.iterdir())  # each trial removes its own
    (worker.scratch / "trial-of-a-killed-worker").mkdir()
    worker.close()
    assert not worker.folder.exists() and not worker.scratch.exists()


def _cli(args: list[str]):
    return CliRunner().invoke(main, args, terminal_width=1000)


@pytest.mark.parametrize("case", ["unknown parameter", "empty space", "floor above 1", "unreachable address"])
def test_bad_input_is_one_sentence_exit_2_and_nothing_written(case, tmp_path, tiny_bert):
    space = write_space(tmp_path)
    args = ["search", str(tiny_bert), "-o", str(tmp_path / "out"), "--space", str(space), "--trials", "1"]
    words = []
    if case == "unknown parameter":
        space.write_text(TINY_SPACE.replace("group_size: [16, 32]", "groupsize: [16, 32]"))
        words = ["space.yaml, line 18", "groupsize"]
    elif case == "empty space":
        space.write_text("version: 1\nname: nothing\n")
        words = ["space.yaml", "empty"]
    elif case == "floor above 1":
        args += ["--min-retention", "1.5"]
        words = ["--min-retention 1.5", "at most 1"]
    else:
        args += ["--address", "127.0.0.1:9"]  # the discard port: nothing listens there
        words = ["--address 127.0.0.1:9", "no Ray cluster answers"]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _cli(args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output folder, nothing else


def test_resume_refuses_a_folder_without_a_search_or_with_another_one(tmp_path, tiny_bert):
    space = write_space(tmp_path)
    out = tmp_path / "out"
    args = ["search", str(tiny_bert), "-o", str(out), "--space", str(space)]
    result = _cli([*args, "--resume"])
    assert result.exit_code == 2 and "holds no search to resume" in result.stderr
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"model_sha256": "0" * 64}))
    (out / "study.db").write_text("")
    result = _cli([*args, "--resume"])
    assert result.exit_code == 2 and "started with a different model sha256" in result.stderr
    result = _cli(args)
    assert result.exit_code == 2 and "holds a search already; continue it with --resume" in result.stderr


def test_trials_export_onnx_only_when_the_exporter_takes_their_passes():
    from compress.exporters import export_config_from_dict
    from compress.search.setup import export_steps

    space = SearchSpace.loads(NO_SEEDS, "space.yaml")
    ort = Evaluation(devices=("cpu",), runtimes=("onnxruntime",))
    ctx = Context(teacher="t", evaluation=ort, sensitive=("a", "b"), export=export_steps(ort))
    assert export_steps(Evaluation(runtimes=("torch",))) == ()
    onnx = export_config_from_dict({"format": "onnx"}, "export")
    point = {"prune": "off", "quantize": "int8", "quantize.int8.layers": 0, "quantize.embeddings": "same"}
    assert recipe_of(space, Fixed(point), ctx).export == []  # weight-only INT8: timed on the float export
    dynamic = SearchSpace.loads(
        NO_SEEDS.replace("int8: {scheme: int8}", "int8: {scheme: int8, activations: dynamic}")
    )
    assert recipe_of(dynamic, Fixed(point), ctx).export == [onnx]
    int4 = {**point, "quantize": "int4", "quantize.int4.group_size": 16, "quantize.int4.symmetric": True}
    assert recipe_of(space, Fixed({**int4, "quantize.int4.layers": 0}), ctx).export == [onnx]
    assert recipe_of(space, Fixed({**int4, "quantize.int4.layers": 2}), ctx).export == []  # INT8 layers kept


def test_cz_search_is_the_search_and_loads_ray_and_optuna_only_when_called():
    import subprocess
    import sys

    code = (
        "import sys, compress as cz; f = cz.search; "
        "assert 'search' in cz.__all__ and f is sys.modules['compress.search.driver'].search; "
        "assert 'Example' in f.__doc__ and 'ray' not in sys.modules and 'optuna' not in sys.modules"
    )
    # and after its modules are imported, cz.search is still the function
    after = "import sys, compress.search.driver, compress as cz; assert cz.search.__name__ == 'search'"
    for source in (code, after):
        done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_the_same_recipe_has_the_same_key_whatever_its_name():
    space = SearchSpace.load(DEFAULT)
    point = point_of(space, Recipe.load(ROOT / "recipes" / "int8-dynamic.yaml"), CTX)
    seed, sampled = (recipe_of(space, Fixed(point), CTX, name) for name in ("int8-dynamic", "t11"))
    assert recipe_key(seed) == recipe_key(sampled)
    other = recipe_of(space, Fixed({**point, "quantize.embeddings": "int8"}), CTX, "t12")
    assert recipe_key(other) != recipe_key(seed)
