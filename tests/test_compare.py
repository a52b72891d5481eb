"""Report schema, Markdown/HTML output, `compress compare` and its Pareto plot, and eval's bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import compress as cz
from compress.cli import main
from compress.compare import compare, describe_recipe, pareto_front
from compress.errors import BadInput
from compress.eval.latency import LatencySettings
from compress.report import Report
from compress.testing import tiny_mlp, write_tiny_llama
from tests.conftest import file_digest

QUICK = LatencySettings(warmup=1, min_rounds=3, max_rounds=6, budget_s=0.2)
FAST = ["--limit", "8", "--budget", "0.2", "--batch-size", "2", "--seq-len", "16", "--device", "cpu", "-q"]
TOP_LEVEL = {
    "schema", "created", "candidate", "baseline", "size", "accuracy", "latency", "tensors",
    "tensor_summary", "sparsity", "compute", "distillation", "generation", "environment", "notes",
}  # fmt: skip
LATENCY_OK = {
    "device", "runtime", "status", "reason", "batch_size", "seq_len", "threads", "p50_ms", "p90_ms", "iqr_ms",
    "baseline_p50_ms", "baseline_p90_ms", "baseline_iqr_ms", "speedup", "speedup_ci", "throughput",
    "baseline_throughput", "rounds", "peak_rss_mb", "call_rss_mb", "baseline_peak_rss_mb",
    "baseline_call_rss_mb", "ideal_speedup", "torch_kernels", "warmup_rounds", "timing_s", "budget_capped",
}  # fmt: skip


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list:
    """Four reports of tiny-MLP candidates, written as JSON files."""
    folder = tmp_path_factory.mktemp("reports")
    mlp, x = tiny_mlp(), torch.randn(4, 32)
    paths = []
    for name, kwargs in [
        ("int8", {"scheme": "int8"}),
        ("int4-g16", {"scheme": "int4", "group_size": 16}),
        ("int4-g32", {"scheme": "int4", "group_size": 32}),
        ("int4-g16-asym", {"scheme": "int4", "group_size": 16, "symmetric": False}),
    ]:
        report = cz.evaluate(cz.quantize(mlp, **kwargs), mlp, inputs=x, devices=("cpu",), latency=QUICK)
        path = folder / f"{name}.json"
        path.write_text(report.to_json())
        paths.append(path)
    return paths


def test_report_json_has_the_documented_keys(reports):
    data = json.loads(reports[0].read_text())
    assert set(data) == TOP_LEVEL and data["schema"] == "compress.report/3"
    assert set(data["latency"][0]) == LATENCY_OK
    assert set(data["accuracy"]) >= {"status", "task", "metric", "value", "baseline", "retention", "details"}
    back = Report.load(reports[0])
    assert back.to_dict()["latency"] == data["latency"]


def test_markdown_and_html_show_every_latency_row(reports):
    report = Report.load(reports[0])
    md = report.to_markdown()
    assert "| latency cpu/torch" in md and "peak RSS (call)" in md
    assert "<table>" in report._repr_html_()


def test_pareto_front_by_hand():
    points = [(1.0, 1.0), (0.25, 0.99), (0.5, 0.98), (0.14, 0.95), (0.3, 0.999)]
    # (0.5, 0.98) is beaten by (0.25, 0.99); (0.25, 0.99) is not beaten by (0.3, 0.999) (bigger)
    assert pareto_front(points, lower_x_is_better=True) == [0, 1, 3, 4]
    assert pareto_front([(1.0, 1.0), (2.0, 0.9), (0.5, 0.99)], lower_x_is_better=False) == [0, 1]


def test_compare_table_and_plot(reports, tmp_path):
    comparison = compare(reports)
    assert comparison.names == ["int8", "int4-g16", "int4-g32", "int4-g16-asym"]  # names clash: file stems
    rows = {row[0]: row[1:] for row in comparison.rows()}
    assert rows["recipe"][1:] == [
        "quantize int8",
        "quantize int4 g16",
        "quantize int4 g32",
        "quantize int4 g16 asym",
    ]
    assert rows["size ratio"][0] == "×1.000" and len(rows["speedup cpu/torch"]) == 5
    points = comparison.points("size")
    assert points[0]["name"] == "baseline" and len(points) == 5
    assert [p["x"] for p in points[1:]] == [json.loads(r.read_text())["size"]["ratio"] for r in reports]
    png = comparison.plot(tmp_path / "pareto.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert "| retention |" in comparison.to_markdown() and "<table>" in comparison._repr_html_()


# (size ratio, retention, cpu/torch speedup) set by hand; the front on each axis worked out below.
CONSTRUCTED = {
    "a": (0.30, 0.999, 1.2),  # size: front (the most accurate candidate). speed: front (faster than baseline)
    "b": (0.20, 0.990, 0.9),  # size: front.  speed: beaten by the baseline (1.0 >= 0.9, 1.0 >= 0.99)
    "c": (0.25, 0.980, 1.5),  # size: beaten by b (smaller and more accurate).  speed: front (fastest)
    "d": (0.14, 0.950, 1.5),  # size: front (smallest).  speed: beaten by c (as fast, more accurate)
}


def test_pareto_flags_of_constructed_reports(reports, tmp_path):
    template = json.loads(reports[0].read_text())
    paths = []
    for name, (ratio, retention, speedup) in CONSTRUCTED.items():
        data = json.loads(json.dumps(template))
        data["candidate"]["name"] = name
        data["size"]["ratio"] = ratio
        data["accuracy"]["retention"] = retention
        row = next(r for r in data["latency"] if (r["device"], r["runtime"]) == ("cpu", "torch"))
        row["speedup"] = speedup
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(data))
    comparison = compare(paths)
    by_size = {p["name"]: p["front"] for p in comparison.points("size")}
    assert by_size == {"baseline": True, "a": True, "b": True, "c": False, "d": True}
    by_speed = {p["name"]: p["front"] for p in comparison.points("latency")}
    assert by_speed == {"baseline": True, "a": True, "b": False, "c": True, "d": False}


def test_compare_command_writes_plot_markdown_and_json(reports, tmp_path):
    plot, md = tmp_path / "p.png", tmp_path / "c.md"
    result = run(
        "compare", *map(str, reports), "--plot", str(plot), "--markdown", str(md), "--json", "-", "-q"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["candidates"] == ["int8", "int4-g16", "int4-g32", "int4-g16-asym"]
    assert plot.exists() and "| size ratio |" in md.read_text()
    assert run("compare", "--help").exit_code == 0


def test_compare_bad_inputs(reports, tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    cases = [
        ([str(tmp_path / "other.json")], "is not a compress report"),
        ([str(tmp_path / "absent.json")], "no such report file"),
        ([str(reports[0]), "--plot", str(tmp_path / "p.gif")], "png, svg, pdf"),
        ([str(reports[0]), "--latency", "cuda/torch"], "no report has a measured 'cuda/torch'"),
    ]
    for args, message in cases:
        result = run("compare", *args)
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "p.gif").exists()
    assert describe_recipe([]) == "—"
    with pytest.raises(BadInput, match="2 names for 4 reports"):
        compare(reports, names=["a", "b"])


def test_eval_writes_markdown_and_says_what_auto_picked(tiny_bert, tmp_path):
    run("quantize", str(tiny_bert), "-o", str(tmp_path / "q"), "--no-eval", "-q")
    md = tmp_path / "r.md"
    result = run("eval", str(tmp_path / "q"), "--baseline", str(tiny_bert), "--markdown", str(md), *FAST)
    assert result.exit_code == 0, result.output
    assert "task auto: picked 'classification'" in md.read_text()


def test_eval_reads_the_columns_it_is_told(tiny_bert, tmp_path):
    rows = [{"body": f"free money now {i}", "kind": "spam"} for i in range(6)]
    rows += [{"body": f"the team meeting is today {i}", "kind": "ham"} for i in range(6)]
    data = tmp_path / "mail.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    args = ["eval", str(tiny_bert), "--baseline", str(tiny_bert), "--data", str(data), "--json", "-", *FAST]
    assert run(*args).exit_code == 2  # no 'text' column
    result = run(*args, "--text-column", "body", "--label-column", "kind")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"]["details"]["labels"] == ["ham", "spam"]


def _eval_bad_inputs(tmp_path, tiny_bert, tiny_llama):
    from compress.testing import write_tiny_bert_classifier

    clf = write_tiny_bert_classifier(tmp_path / "clf")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "corrupt.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": broken\n')
    (tmp_path / "nolabel.csv").write_text("text,category\nhello,a\nworld,b\n")
    (tmp_path / "badlabels.jsonl").write_text(
        "\n".join(json.dumps({"text": t, "label": lab}) for t, lab in [("a", "ham"), ("b", "urgent")])
    )
    (tmp_path / "short.txt").write_text("free money now")
    second_llama = write_tiny_llama(tmp_path / "llama2", seed=1)
    bert, llama = str(tiny_bert), str(tiny_llama)
    return {
        "missing data": ([bert, bert, "--data", str(tmp_path / "nope.jsonl")], "no such data file"),
        "empty data": ([bert, bert, "--data", str(tmp_path / "empty.jsonl")], "has no rows"),
        "corrupt data": ([bert, bert, "--data", str(tmp_path / "corrupt.jsonl")], "line 2 is not valid JSON"),
        "no label column": ([bert, bert, "--data", str(tmp_path / "nolabel.csv")], "has no 'label' column"),
        "labels vs head": (
            [str(clf), str(clf), "--task", "classification", "--data", str(tmp_path / "badlabels.jsonl")],
            "do not match the model's head",
        ),
        "too short": (
            [
                llama,
                str(second_llama),
                "--task",
                "causal-lm",
                "--data",
                str(tmp_path / "short.txt"),
                "--window",
                "64",
            ],
            "one window needs 64",
        ),
        "architectures": ([llama, bert], "compare like with like"),
        "head vs encoder": ([str(clf), bert], "outputs are not comparable"),
        "unknown task": ([bert, bert, "--task", "accuracy"], "unknown task 'accuracy'"),
        "unknown runtime": ([bert, bert, "--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
        "stride": ([llama, llama, "--task", "causal-lm", "--window", "16", "--stride", "32"], "stride 32"),
    }


CASES = [
    "missing data",
    "empty data",
    "corrupt data",
    "no label column",
    "labels vs head",
    "too short",
    "architectures",
    "head vs encoder",
    "unknown task",
    "unknown runtime",
    "stride",
]


@pytest.mark.parametrize("case", CASES)
def test_eval_bad_input_is_one_sentence_and_exit_2(tiny_bert, tiny_llama, tmp_path, case):
    (candidate, baseline, *options), message = _eval_bad_inputs(tmp_path, tiny_bert, tiny_llama)[case]
    before = file_digest(tiny_bert)
    md = tmp_path / "out.md"
    result = run("eval", candidate, "--baseline", baseline, *options, *FAST, "--markdown", str(md))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not md.exists() and file_digest(tiny_bert) == before


def test_plot_labels_stay_inside_the_axes_and_apart():
    """Points crowded near one corner (as INT4 variants are on the size axis): every name is drawn
    inside its panel and no two names overlap."""
    from matplotlib.text import Text

    from compress.plots import pareto_figure

    names = [
        "evaluator-int4-g128",
        "evaluator-int4-g32",
        "evaluator-int4-g32-asym",
        "evaluator-int8",
        "baseline",
    ]
    xs = [0.130, 0.142, 0.146, 0.254, 1.0]
    points = [
        {"name": n, "x": x, "retention": 1.0, "front": i < 2}
        for i, (n, x) in enumerate(zip(names, xs, strict=True))
    ]
    figure = pareto_figure([("size", "size ratio", points)] * 2, "retention", "title")
    figure.canvas.draw()  # at the figure's own dpi, as the labels were placed
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        frame = ax.get_window_extent(renderer)
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts if t.get_text() in names]  # no arrow
        assert len(boxes) == len(names)
        assert all(
            frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes
        )
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
