"""cz.sweep: one load, each setting compressed and evaluated alike; table, HTML, chart, best(), save."""

from __future__ import annotations

import copy
import io
import json
import sys

import pytest
import torch

import compress as cz
from compress.errors import BadInput
from compress.eval.latency import LatencySettings
from compress.sweep import Candidate, Sweep
from compress.testing import tiny_mlp
from tests.conftest import assert_measured_latency

QUICK = LatencySettings(warmup=1, min_rounds=3, max_rounds=6, budget_s=0.2)
SETTINGS = [
    cz.Quantize(scheme="int8"),
    cz.Quantize(scheme="int4", group_size=16),
    cz.Quantize(scheme="int4", group_size=32, symmetric=False),
]


@pytest.fixture(scope="module")
def mlp_sweep() -> Sweep:
    mlp = tiny_mlp()
    return cz.sweep(mlp, SETTINGS, inputs=torch.randn(4, 32), latency=QUICK, progress=False)


def test_sweep_evaluates_each_setting_against_the_one_base(mlp_sweep):
    assert mlp_sweep.names == ["quantize int8", "quantize int4 g16", "quantize int4 g32 asym"]
    for candidate, setting in zip(mlp_sweep, SETTINGS, strict=True):
        resolved = setting.resolve()  # INT4's method auto is rtn for a model that is not a causal LM
        assert candidate.recipe.passes == [resolved]
        assert candidate.report.candidate["name"] == candidate.name
        assert candidate.report.candidate["recipe"] == [resolved.to_dict()]
        assert_measured_latency(candidate.report.latency_row("cpu", "torch"), min_rounds=QUICK.min_rounds)
    ratios = [c.report.metric("size.ratio") for c in mlp_sweep]
    assert ratios[0] > ratios[1] and ratios[0] > ratios[2]  # INT4 is smaller than INT8
    assert mlp_sweep["quantize int8"] is mlp_sweep[0]
    with pytest.raises(KeyError, match="quantize int8"):
        mlp_sweep["int3"]


def test_sweep_loads_a_checkpoint_once_and_embeds_the_baseline_once(tiny_bert, monkeypatch):
    import compress.model
    from compress.eval.tasks import ProbeClassification

    built, embedded = [], []
    real_build, real_embed = compress.model.build_module, ProbeClassification._embed
    monkeypatch.setattr(
        compress.model, "build_module", lambda *a, **k: built.append(1) or real_build(*a, **k)
    )
    monkeypatch.setattr(
        ProbeClassification, "_embed", lambda self, m, *a: embedded.append(m) or real_embed(self, m, *a)
    )
    result = cz.sweep(
        tiny_bert,
        [cz.Quantize(scheme="int8"), cz.Quantize(scheme="int4", group_size=16)],
        data="spam",
        limit=8,
        latency=QUICK,
        progress=False,
    )
    assert len(built) == 1 and len(result) == 2
    # baseline: probe texts and scored texts once; each candidate: its scored texts
    assert len(embedded) == 4 and embedded[0] is embedded[1] and embedded[2] is not embedded[3]
    for candidate in result:
        assert candidate.report.accuracy.status == "ok" and candidate.report.accuracy.task == "classification"
        assert any("task auto: picked 'classification'" in n for n in candidate.report.notes)
        assert not any("as given" in n for n in candidate.report.notes)


def test_sweep_html_table_names_every_setting_and_the_front(mlp_sweep):
    page = mlp_sweep._repr_html_()
    assert page.startswith("<div>") and page.count("<tr>") == 1 + 1 + len(SETTINGS)  # header, baseline
    for name in mlp_sweep.names:
        assert f"<td>{name}</td>" in page
    rows = mlp_sweep.table()
    assert f"<td>{rows[0]['retention']:.4f}</td>" in page
    assert "Pareto front" in page


def test_sweep_front_flags_of_constructed_candidates(crafted):
    """Which settings are on each front, for numbers set by hand (the baseline is 1.0, 1.0, speed 1.0)."""
    dominated = _fake(crafted[0], "dominated", 0.25, 0.99, 0.7)  # mid is smaller, more accurate, faster
    sweep = Sweep([*crafted, dominated])
    flags = {row["setting"]: (row["front_size"], row["front_speed"]) for row in sweep.table()}
    assert flags == {
        "big-exact": (True, False),  # the most accurate; slower than the baseline, which is as accurate
        "small-lossy": (True, False),  # the smallest; slower and less accurate than the baseline
        "mid": (True, True),  # the only one faster than the baseline
        "dominated": (False, False),
    }
    page = sweep._repr_html_()
    assert page.count("<td>size and speed</td>") == 1 and page.count("<td>size</td>") == 2
    assert "<td>dominated</td>" in page and page.split("<td>dominated</td>")[1].split("</tr>")[0].endswith(
        "<td></td>"
    )


def test_sweep_html_escapes_names():
    mlp = tiny_mlp()
    result = cz.sweep(
        mlp,
        [cz.Quantize(scheme="int8")],
        names=["<b>mine</b>"],
        inputs=torch.randn(2, 32),
        devices=(),
        progress=False,
    )
    page = result._repr_html_()
    assert "&lt;b&gt;mine&lt;/b&gt;" in page and "<b>mine</b>" not in page


def test_table_and_pandas(mlp_sweep, monkeypatch):
    rows = mlp_sweep.table()
    assert [r["setting"] for r in rows] == mlp_sweep.names
    for row, candidate in zip(rows, mlp_sweep, strict=True):
        assert row["size_ratio"] == candidate.report.metric("size.ratio")
        assert row["retention"] == candidate.report.metric("accuracy.retention")
        assert row["speedup"] == candidate.report.metric("latency.cpu.speedup")
    pd = pytest.importorskip("pandas")
    frame = mlp_sweep.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == mlp_sweep.names
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(BadInput, match="needs pandas"):
        mlp_sweep.to_pandas()


def _fake(base: Candidate, name: str, ratio: float, retention: float, speedup: float | None) -> Candidate:
    """A copy of a real candidate with chosen numbers, so selection is tested exactly."""
    report = copy.deepcopy(base.report)
    report.size["ratio"], report.accuracy.retention = ratio, retention
    report.latency = [dict(row, speedup=speedup) for row in report.latency] if speedup else []
    return Candidate(name, base.recipe, base.artifact, report)


@pytest.fixture(scope="module")
def crafted(mlp_sweep) -> Sweep:
    base = mlp_sweep[0]
    return Sweep(
        [
            _fake(base, "big-exact", 0.30, 1.000, 0.9),
            _fake(base, "small-lossy", 0.15, 0.980, 0.8),
            _fake(base, "mid", 0.20, 0.995, 1.2),
        ]
    )


def test_best_under_constraints(crafted):
    assert crafted.best().name == "small-lossy"  # no constraint: the smallest
    assert crafted.best(min_retention=0.99).name == "mid"
    assert crafted.best(min_retention=0.99, prefer="retention").name == "big-exact"
    assert crafted.best(prefer="speed").name == "mid"
    assert crafted.best(max_size_ratio=0.25, min_speedup=1.0).name == "mid"
    assert crafted.best(min_retention=0.999).name == "big-exact"


def test_best_when_none_meets(crafted):
    with pytest.raises(BadInput) as error:
        crafted.best(min_retention=0.99, max_size_ratio=0.18)
    message = str(error.value)
    assert "min_retention=0.99, max_size_ratio=0.18" in message
    assert "small-lossy: retention 0.98 < 0.99" in message
    assert "big-exact: size ratio 0.3 > 0.18" in message
    with pytest.raises(BadInput, match="prefer must be one of"):
        crafted.best(prefer="smallest")


def test_best_treats_an_unmeasured_metric_as_a_miss(mlp_sweep):
    base = mlp_sweep[0]
    sweep = Sweep([_fake(base, "no-latency", 0.2, 1.0, None)])
    with pytest.raises(BadInput, match="no-latency: speedup not measured"):
        sweep.best(min_speedup=0.5)


def test_best_saves_model_report_and_recipe(mlp_sweep, tmp_path):
    chosen = mlp_sweep.best(max_size_ratio=0.9)
    weights = chosen.save(tmp_path / "chosen")
    assert {p.name for p in weights.parent.iterdir()} == {"model.safetensors", "report.json", "recipe.yaml"}
    assert cz.Report.load(weights.parent / "report.json").size == chosen.report.size
    recipe = cz.Recipe.load(weights.parent / "recipe.yaml")
    assert recipe.passes == chosen.recipe.passes and recipe.evaluation.devices == ("cpu",)
    assert recipe.name == chosen.recipe.name and recipe.name.startswith("quantize-int")
    reloaded = cz.load(weights, module=tiny_mlp())
    assert reloaded.compression.recipe == [p.to_dict() for p in chosen.recipe.passes]


def test_to_recipe_carries_the_gate(mlp_sweep):
    rules = [{"metric": "size.ratio", "max": 0.5}, cz.Rule(metric="accuracy.retention", min=0.9)]
    recipe = mlp_sweep[1].to_recipe(gate=rules)
    assert recipe.name == "quantize-int4-g16"
    again = cz.Recipe.loads(recipe.to_yaml())
    assert [r.metric for r in again.gate] == ["size.ratio", "accuracy.retention"]
    assert again.passes == mlp_sweep[1].recipe.passes
    assert again.evaluation.latency == QUICK
    with pytest.raises(BadInput, match="missing 'metric'"):
        mlp_sweep[1].to_recipe(gate=[{"max": 0.5}])


def test_plot_is_inline_png_and_a_file(mlp_sweep, tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    chart = mlp_sweep.plot()
    assert chart._repr_png_().startswith(b"\x89PNG")
    assert matplotlib.get_backend() == backend  # a notebook's own plotting is left alone
    axes = chart.figure.axes
    assert len(axes) == 2 and "size on disk" in axes[0].get_xlabel() and "retention" in axes[0].get_ylabel()
    labels = {t.get_text() for t in axes[0].texts}
    assert set(mlp_sweep.names) <= labels
    path = mlp_sweep.plot(tmp_path / "pareto.svg")
    assert (tmp_path / "pareto.svg").read_text().lstrip().startswith("<?xml") and path is not None
    with pytest.raises(BadInput, match=r"pareto\.gif"):
        mlp_sweep.plot(tmp_path / "pareto.gif")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ([], "no settings given"),
        ([42], r"settings\[0\]: expected pass settings"),
        (["no/such/recipe.yaml"], "no/such/recipe.yaml"),
        ([[cz.Quantize(), cz.Prune(pattern="unstructured", sparsity=0.5)]], "pruning after quantization"),
    ],
)
def test_bad_settings_fail_before_any_work(settings, message, monkeypatch):
    import compress.model

    monkeypatch.setattr(compress.model, "load", lambda *a, **k: pytest.fail("loaded before checking"))
    with pytest.raises(BadInput, match=message):
        cz.sweep(tiny_mlp(), settings, progress=False)


def test_bad_settings_are_refused_when_made():
    with pytest.raises(BadInput, match="not a power of two"):
        cz.Quantize(scheme="int4", group_size=24)


def test_names_must_match_the_settings():
    with pytest.raises(BadInput, match="1 names for 2 settings"):
        cz.sweep(tiny_mlp(), SETTINGS[:2], names=["a"], progress=False)


def test_text_progress_has_no_escape_codes():
    from compress.progress import TextProgress, resolve

    out = io.StringIO()
    progress = TextProgress(out, every_s=0)
    progress.start("quantizing", total=3)
    for _ in range(3):
        progress.advance()
    progress.done()
    text = out.getvalue()
    assert "\x1b" not in text and text.endswith("\n")
    assert "quantizing 3/3 done in" in text.rsplit("\r", 1)[-1]
    assert (
        isinstance(resolve(True), TextProgress) and resolve(False) is None and resolve(progress) is progress
    )


def test_cli_progress_in_a_notebook_is_plain_text(monkeypatch):
    import compress.progress
    from compress.cli.common import make_progress

    monkeypatch.setattr(compress.progress, "in_notebook", lambda: True)
    assert isinstance(make_progress(quiet=False), compress.progress.TextProgress)
    assert isinstance(make_progress(quiet=True), compress.progress.NoProgress)


def test_cli_progress_ignores_force_color_on_a_pipe(monkeypatch):
    """Jupyter sets FORCE_COLOR=1 for `!compress ...`; a bar would print cursor codes into the cell."""
    from compress.cli.common import RichProgress, make_progress
    from compress.progress import NoProgress

    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(make_progress(quiet=False), NoProgress)
    monkeypatch.setattr(sys, "stderr", type("Tty", (io.StringIO,), {"isatty": lambda self: True})())
    assert isinstance(make_progress(quiet=False), RichProgress)


def test_public_api_has_examples():
    for name in ("load", "quantize", "prune", "apply", "evaluate", "sweep", "gate", "compare", "Recipe"):
        doc = getattr(cz, name).__doc__ or ""
        assert "Example" in doc and ">>> " in doc, name
    assert "sweep" in cz.__all__ and "Sweep" in dir(cz)


def test_api_functions_stay_functions_after_their_modules_are_imported():
    import compress.compare
    import compress.gate
    import compress.sweep  # noqa: F401

    assert callable(cz.gate) and callable(cz.compare) and callable(cz.sweep)
    assert cz.gate.__module__ == "compress.gate" and cz.sweep.__module__ == "compress.sweep"


def test_compress_sweep_runs_two_settings_and_writes_the_pareto_plot(tiny_bert, tmp_path):
    from click.testing import CliRunner

    from compress.cli import main

    settings = ["{kind: quantize, scheme: int8}", "{kind: quantize, scheme: int4, group_size: 32}"]
    quick = ["--limit", "8", "--budget", "0.2", "--batch-size", "2", "--seq-len", "8", "--device", "cpu"]
    plot, out = tmp_path / "pareto.png", tmp_path / "sweep.json"
    args = ["sweep", str(tiny_bert), *settings, *quick, "--plot", str(plot), "--json", str(out), "-q"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert plot.read_bytes().startswith(b"\x89PNG")
    rows = json.loads(out.read_text())["settings"]
    assert [r["setting"] for r in rows] == ["quantize int8", "quantize int4 g32"]
    assert rows[1]["size_ratio"] < rows[0]["size_ratio"] < 1
    dry = CliRunner().invoke(
        main, ["sweep", str(tiny_bert), *settings, "--dry-run", "--save-recipe", str(tmp_path / "r")]
    )
    assert dry.exit_code == 0 and sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "quantize-int4-g32.yaml",
        "quantize-int8.yaml",
    ]
    assert cz.Recipe.load(tmp_path / "r" / "quantize-int4-g32.yaml").passes[0].group_size == 32
