"""Third-party passes: a plug-in package installed into a temporary location registers its pass
through the `compress.passes` entry point; `compress passes` lists it and a recipe runs it.
Broken plug-ins are listed with the reason instead of breaking compress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner

from compress.cli import main
from compress.registry import BrokenPass
from tests import fake_passes

PLUGIN = textwrap.dedent(
    '''
    """A third-party pass: multiply the targeted layers' biases by a factor, using calibration data."""
    from dataclasses import dataclass, field
    from typing import ClassVar

    from compress.config import PassConfig
    from compress.registry import PassResult, PassSpec
    from compress.targets import Targets


    @dataclass(frozen=True, kw_only=True)
    class BiasScaleConfig(PassConfig):
        kind: ClassVar[str] = "bias-scale"
        needs_data: ClassVar[bool] = True
        factor: float = 0.5
        targets: Targets = field(default_factory=Targets)


    def apply(module, cfg, ctx):
        import torch
        from compress.layers import select_module_layers

        if ctx.data is None or len(ctx.data) == 0:
            raise RuntimeError("bias-scale got no calibration data")
        changes = {}
        with torch.no_grad():
            for names in select_module_layers(module, cfg.targets, "bias-scale"):
                module.get_submodule(names[0]).bias.mul_(cfg.factor)
                changes[names[0] + ".bias"] = {"factor": cfg.factor, "samples": len(ctx.data)}
        return PassResult(module=module, changes=changes)


    PASS = PassSpec(kind="bias-scale", config=BiasScaleConfig, apply=apply, summary="scale biases (plug-in)")
    '''
)

PYPROJECT = textwrap.dedent(
    """
    [build-system]
    requires = ["setuptools>=61"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "compress-bias-scale"
    version = "0.1.0"

    [project.entry-points."compress.passes"]
    bias-scale = "compress_bias_scale:PASS"
    broken-one = "compress_bias_scale:NO_SUCH_PASS"

    [tool.setuptools]
    py-modules = ["compress_bias_scale"]
    """
)

RECIPE = textwrap.dedent(
    """
    version: 1
    name: plugin-then-int8
    passes:
      - {kind: bias-scale, factor: 0.5, targets: {include: ["*attention.self.query"]}}
      - {kind: quantize, scheme: int8}
    calibration: {data: wiki-train, samples: 4, seq_len: 32}
    evaluate:
      limit: 16
      devices: [cpu]
      latency: {batch_size: 2, seq_len: 16, budget_s: 0.3, min_rounds: 3}
    gate:
      - {metric: size.ratio, max: 0.6}
    """
)


# Runs several compress commands in one fresh interpreter (one torch import), as a user's shell would
# one after the other, and prints each exit code.
DRIVER = textwrap.dedent(
    """
    import json, sys
    from compress.cli import main
    for args in json.loads(sys.argv[1]):
        try:
            main(args)
        except SystemExit as exc:
            print("exit", exc.code, file=sys.stderr)
    """
)


def compress_commands(commands: list[list[str]], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_plugin_installed_elsewhere_is_listed_and_runs_from_a_recipe(tmp_path, tiny_bert):
    package = tmp_path / "plugin"
    package.mkdir()
    (package / "pyproject.toml").write_text(PYPROJECT)
    (package / "compress_bias_scale.py").write_text(PLUGIN)
    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(package),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr

    (tmp_path / "recipe.yaml").write_text(RECIPE)
    out = tmp_path / "out"
    commands = [
        ["passes", "--json", "passes.json"],
        ["run", "recipe.yaml", str(tiny_bert), "-o", str(out), "--json", "report.json"],
    ]
    done = compress_commands(commands, site, tmp_path)
    assert done.returncode == 0 and done.stderr.count("exit 0") == 2, done.stderr
    listing = json.loads((tmp_path / "passes.json").read_text())
    plugin = next(p for p in listing["passes"] if p["kind"] == "bias-scale")
    assert plugin["package"] == "compress-bias-scale" and not plugin["builtin"]
    assert plugin["needs_data"] is True
    assert {"name": "factor", "type": "float", "default": 0.5} in plugin["settings"]
    assert any(p["kind"] == "quantize" and p["builtin"] for p in listing["passes"])
    broken = {b["kind"]: b for b in listing["broken"]}
    assert "NO_SUCH_PASS" in broken["broken-one"]["reason"]

    assert "gate passed" in done.stderr
    from compress.checkpoint import SafetensorsFile

    result, source = SafetensorsFile(out / "model.safetensors"), SafetensorsFile(tiny_bert)
    recipe = json.loads(result.metadata["compress.recipe"])
    assert [p["kind"] for p in recipe] == ["bias-scale", "quantize"]
    name = "encoder.layer.1.attention.self.query.bias"
    assert (result.read(name) == 0.5 * source.read(name)).all()  # the plug-in's change, kept
    other = "encoder.layer.1.attention.self.key.bias"
    assert (result.read(other) == source.read(other)).all()
    assert json.loads((tmp_path / "report.json").read_text())["candidate"]["recipe"] == recipe


def test_passes_command_lists_settings_and_broken_plugins(monkeypatch):
    fake_passes.install(
        monkeypatch,
        fake_passes.SCALE,
        broken={"bad": BrokenPass("bad", "badpkg:PASS", "ImportError: No module named 'badpkg'")},
    )
    result = CliRunner().invoke(main, ["passes"], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "quantize, scheme int8" in result.stdout and "quantize, method gptq" in result.stdout
    assert "group_size" in result.stdout and "damp" in result.stdout and "0.01" in result.stdout
    listing = json.loads(CliRunner().invoke(main, ["passes", "--json", "-"]).stdout)
    kinds = {p["kind"]: p for p in listing["passes"]}
    assert kinds["distill"]["data"] == "training" and kinds["quantize"]["data"] == "calibration"
    gptq = next(m for m in kinds["quantize"]["methods"] if m["label"] == "method gptq")
    assert {"name": "damp", "type": "float", "default": 0.01} in gptq["settings"]
    assert "export onnx" in result.stdout and "quant_format" in result.stdout
    assert "targets.include" in result.stdout
    assert "broken plug-in bad (badpkg:PASS" in result.stdout and "No module named 'badpkg'" in result.stdout
