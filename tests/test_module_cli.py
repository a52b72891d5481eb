"""A model of the user's own class from the command line: `--module FILE.py:Class --module-arg k=v`.

The README's digits CNN example runs end to end on a CNN trained here on scikit-learn's digits and
saved as a bare safetensors (no config.json); every command that takes a model accepts --module; the
saved recipe carries it (`model:`) and reproduces the run; every way it can go wrong is one sentence
and exit 2 with nothing written; a bare checkpoint refuses evaluation options that cannot apply.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import compress as cz
from compress.checkpoint import SafetensorsFile, save_tensors
from compress.cli import main
from compress.errors import BadInput
from compress.plan import plan_run
from compress.recipe import Recipe
from compress.usermodule import ModelSpec, parse_args

CNN_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "models" / "digits_cnn.py"
MODULE = ["--module", f"{CNN_FILE}:DigitsCNN", "--module-arg", "width=8"]
SPEC = ModelSpec(module=f"{CNN_FILE}:DigitsCNN", args={"width": 8})
FAST = ["--budget", "0.2", "--batch-size", "4", "--device", "cpu"]


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """DigitsCNN(width=8) trained for 60 steps on scikit-learn's 8x8 digits (one thread, seeded: about a
    second), saved as a bare cnn/model.safetensors; digits.npz holds the 397 held-out images (x, y)."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = SPEC.build().train()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        images, labels = torch.from_numpy(x[:1400]), torch.from_numpy(y[:1400])
        generator = torch.Generator().manual_seed(0)
        for _ in range(60):
            batch = torch.randint(0, len(images), (64,), generator=generator)
            loss = torch.nn.functional.cross_entropy(net(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    (folder / "cnn").mkdir()
    save_tensors(
        folder / "cnn" / "model.safetensors", {k: v.contiguous() for k, v in net.state_dict().items()}
    )
    np.savez(folder / "digits.npz", x=x[1400:], y=y[1400:])
    return folder


def shapes(path: Path) -> dict[str, list[int]]:
    return {name: list(info.shape) for name, info in SafetensorsFile(path).tensors.items()}


def test_the_readme_digits_cnn_example_prunes_both_convolutions_and_reports_accuracy_and_latency(
    digits, tmp_path
):
    cnn, data, out = digits / "cnn" / "model.safetensors", str(digits / "digits.npz"), tmp_path / "out"
    args = ["--pattern", "channels", "--sparsity", "0.5", "--calib", data, "--task", "classification"]
    report_path = tmp_path / "r.json"
    result = run(
        "prune", str(cnn), *MODULE, *args, "--data", data, "-o", str(out), "--json", str(report_path)
    )
    assert result.exit_code == 0, result.output
    pruned = shapes(out / "model.safetensors")
    assert pruned["conv1.weight"] == [4, 1, 3, 3]  # 8 -> 4 channels
    assert pruned["conv2.weight"] == [8, 4, 3, 3]  # 16 -> 8: the conv that feeds the flattened head
    assert pruned["head.weight"] == [10, 32]  # 8 channels x 2 x 2 positions
    report = json.loads(report_path.read_text())
    accuracy = report["accuracy"]
    assert accuracy["status"] == "ok" and accuracy["task"] == "classification"
    assert accuracy["baseline"] > 0.6  # really trained: chance is 0.1
    assert 0 < accuracy["retention"] <= 1.2
    latency = {row["device"]: row for row in report["latency"]}
    assert latency["cpu"]["status"] == "ok" and latency["cpu"]["speedup"] > 0
    assert report["size"]["ratio"] < 0.6
    recipe = (out / "recipe.yaml").read_text()
    assert "DigitsCNN" in recipe and "width: 8" in recipe
    back = cz.load(out, module=SPEC.build())
    assert back.module.conv2.weight.shape == (8, 4, 3, 3)  # the fresh class shrinks to the stored shapes

    again = tmp_path / "again"  # the saved recipe alone (no --module) reproduces the run
    result = run(
        "run", str(out / "recipe.yaml"), str(cnn), "-o", str(again), "--json", str(tmp_path / "a.json")
    )
    assert result.exit_code == 0, result.output
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert json.loads((tmp_path / "a.json").read_text())["accuracy"]["value"] == accuracy["value"]


def test_quantize_with_module_evaluates_for_real(digits, tmp_path):
    cnn, data = digits / "cnn" / "model.safetensors", str(digits / "digits.npz")
    evaluation = ["--task", "classification", "--data", data, "--json", "-", "-q", *FAST]
    result = run("quantize", str(cnn), *MODULE, *evaluation, "-o", str(tmp_path / "q"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["accuracy"]["status"] == "ok" and report["accuracy"]["retention"] > 0.95
    assert report["latency"][0]["status"] == "ok"
    quantized = {t["name"] for t in report["tensors"]}
    assert quantized == {"head.weight"}  # Linear layers only: the class says which weights are Linear


def test_without_module_a_bare_checkpoint_refuses_evaluation_options_it_cannot_apply(digits, tmp_path):
    cnn, data, out = digits / "cnn" / "model.safetensors", str(digits / "digits.npz"), tmp_path / "q"
    line = one_line_error(
        run("quantize", str(cnn), "--task", "classification", "--data", data, "-o", str(out))
    )
    assert "no config.json" in line and "--module" in line and "task 'classification'" in line
    assert not out.exists()
    line = one_line_error(run("eval", str(cnn), "--baseline", str(cnn), "--data", data))
    assert "--module" in line
    result = run("quantize", str(cnn), "-o", str(out), "--json", "-", "-q")  # nothing asked: said
    assert result.exit_code == 0, result.output
    assert "--module" in json.loads(result.stdout)["accuracy"]["reason"]


def test_eval_sweep_and_distill_take_module_too(digits, tmp_path):
    cnn, data, pruned = digits / "cnn" / "model.safetensors", str(digits / "digits.npz"), tmp_path / "p"
    prune = ["--pattern", "channels", "--sparsity", "0.5", "--calib", data, "--no-eval", "-q"]
    assert run("prune", str(cnn), *MODULE, *prune, "-o", str(pruned)).exit_code == 0
    evaluation = ["--data", data, "--json", "-", "-q", *FAST]
    result = run("eval", str(pruned), "--baseline", str(cnn), *MODULE, *evaluation)
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    assert evaluated["accuracy"]["status"] == "ok" and evaluated["latency"][0]["status"] == "ok"

    setting = "{kind: quantize, scheme: int8}"
    result = run("sweep", str(cnn), setting, *MODULE, "--data", data, "-o", str(tmp_path / "s"), "-q", *FAST)
    assert result.exit_code == 0, result.output
    (point,) = (tmp_path / "s").iterdir()
    assert Recipe.load(point / "recipe.yaml").model == SPEC

    student = ["--teacher", str(cnn), "--data", data, "--max-steps", "3", "--eval-data", data]
    result = run("distill", str(pruned), *student, *MODULE, "-o", str(tmp_path / "d"), *evaluation[2:])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    before = report["distillation"]["accuracy_before"]  # the pruned student, scored as `compress eval` did
    assert before["value"] == pytest.approx(evaluated["accuracy"]["value"])
    assert report["accuracy"]["status"] == "ok"


BROKEN = """
import torch
class NotAModule:
    pass
class Needs(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        raise RuntimeError("needs a GPU\\nand more")
class Wider(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.extra = torch.nn.Linear(2, 2)
"""


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("missing.py:DigitsCNN", [], "missing.py: no such file"),
        ("{cnn}:Nope", [], "has no class 'Nope' (torch.nn.Module classes there: DigitsCNN)"),
        ("{user}:NotAModule", [], "'NotAModule' is not a torch.nn.Module class"),
        ("{user}:Needs", ["width=3"], r"Needs(width=3) failed (RuntimeError: needs a GPU)"),
        ("{user}:Needs", [], "Needs() failed (TypeError"),
        ("{raises}:X", [], "failed (ImportError: no torch for you)"),
        ("no_such_package.models:Net", [], "no module named 'no_such_package'"),
        ("{cnn}:DigitsCNN", ["width=16"], "conv1.weight is [8, 1, 3, 3] in the checkpoint but [16, 1, 3, 3]"),
        ("{user}:Wider", [], "the checkpoint lacks extra.weight, extra.bias; the module has no tensor"),
        ("{cnn}:DigitsCNN", ["width=8", "depth=2"], "DigitsCNN(width=8, depth=2) failed (TypeError"),
        ("{cnn}", [], "name a class, as FILE.py:ClassName"),
        ("{cnn}:DigitsCNN", ["width"], "give NAME=VALUE"),
        ("{cnn}:DigitsCNN", ["width=8", "width=9"], "'width' is given twice"),
    ],
)
def test_every_way_a_module_can_be_wrong_is_one_sentence_and_nothing_written(
    digits, tmp_path, module, args, message
):
    (tmp_path / "user.py").write_text(BROKEN)
    (tmp_path / "raises.py").write_text("raise ImportError('no torch for you')\n")
    spec = module.format(cnn=CNN_FILE, user=tmp_path / "user.py", raises=tmp_path / "raises.py")
    out = tmp_path / "out"
    options = ["--module", spec] + [part for a in args for part in ("--module-arg", a)]
    for command in (["quantize"], ["prune", "--pattern", "channels", "--calib", str(digits / "digits.npz")]):
        line = one_line_error(
            run(*command, str(digits / "cnn" / "model.safetensors"), *options, "-o", str(out))
        )
        assert message in line
        assert not out.exists()


def test_module_arg_without_module_is_refused(digits, tmp_path):
    line = one_line_error(
        run("quantize", str(digits / "cnn" / "model.safetensors"), "--module-arg", "width=8")
    )
    assert "--module-arg: give the class it is for with --module" in line


def test_module_arg_values_are_read_as_yaml():
    args = parse_args(["width=16", "scale=0.5", "bias=true", "name=small net", "sizes=[1, 2]", "empty="])
    assert args == {
        "width": 16,
        "scale": 0.5,
        "bias": True,
        "name": "small net",
        "sizes": [1, 2],
        "empty": "",
    }


def test_the_recipe_model_section_is_strict_and_round_trips(tmp_path):
    text = "model: {module: 'cnn.py:DigitsCNN', args: {width: 8}}\npasses: [{kind: quantize}]\n"
    recipe = Recipe.loads(text)
    assert recipe.model == ModelSpec(module="cnn.py:DigitsCNN", args={"width": 8})
    assert Recipe.loads(recipe.to_yaml()).model == recipe.model
    with pytest.raises(BadInput, match=r"line 1: .*unknown setting 'arg' \(did you mean 'args'\?\)"):
        Recipe.loads("model: {module: 'cnn.py:DigitsCNN', arg: {width: 8}}\npasses: [{kind: quantize}]\n")
    with pytest.raises(BadInput, match=r"must name a class as FILE\.py:ClassName"):
        Recipe.loads("model: {module: cnn.py}\npasses: [{kind: quantize}]\n")
    with pytest.raises(BadInput, match=r"model.args.width: .* is not a number"):
        ModelSpec(module="cnn.py:DigitsCNN", args={"width": object()})


def test_the_cache_key_follows_the_class_its_arguments_and_its_code(digits, tmp_path):
    source = tmp_path / "mine.py"
    source.write_text(CNN_FILE.read_text())
    cnn = digits / "cnn" / "model.safetensors"

    def key(args: dict) -> str:
        recipe = Recipe.of([cz.Quantize()]).replace(model=ModelSpec(module=f"{source}:DigitsCNN", args=args))
        return plan_run(recipe, cnn, cache=tmp_path / "cache").steps[0].key

    first = key({"width": 8})
    assert key({"width": 8}) == first
    source.write_text(source.read_text() + "\n# a change to the code\n")
    assert key({"width": 8}) != first
    plain = plan_run(Recipe.of([cz.Quantize()]), cnn, cache=tmp_path / "cache").steps[0]
    assert plain.key != first and plain.road == "stream"  # without a class: the file alone, streamed


def test_a_model_in_memory_must_match_the_recipes_model_section(digits):
    model = SPEC.load(digits / "cnn" / "model.safetensors")
    plan = plan_run(Recipe.of([cz.Quantize()]), model, cache=None)
    assert plan.recipe.model == SPEC  # a model built from a spec records it in the run's recipe
    other = Recipe.of([cz.Quantize()]).replace(model=SPEC.replace(args={"width": 4}))
    with pytest.raises(BadInput, match=r"the recipe builds its model as DigitsCNN\(width=4\)"):
        plan_run(other, model, cache=None)
