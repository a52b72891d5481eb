"""The command line and the API cannot drift: every option of `compress quantize` is a setting of the
quantize method classes, left unset unless given (so the class's default applies), and its help shows
that default; every setting of those classes is reachable from an option."""

from __future__ import annotations

import dataclasses

import click

from compress.cli.quantize import SETTING_OPTIONS, quantize
from compress.passes.quantize.config import QuantizeConfig

# Settings the command fills from other options: scheme/method/backend are choices of their own,
# targets and embeddings come from --embeddings/--include/--exclude, calibration from --calib*.
FROM_OTHER_OPTIONS = {"scheme", "method", "backend", "targets", "embeddings", "calibration"}


def _options() -> dict[str, click.Option]:
    return {p.name: p for p in quantize.params if isinstance(p, click.Option)}


def _fields() -> dict[str, list]:
    out: dict[str, list] = {}
    for cls in QuantizeConfig.METHOD_CLASSES:
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, []).append((cls, f))
    return out


def test_every_setting_option_is_a_field_left_to_the_class_default():
    options, fields = _options(), _fields()
    given = quantize.make_context("quantize", ["model.safetensors"]).params  # no option on the line
    for name in SETTING_OPTIONS:
        assert name in fields, f"--{name} is no setting of any quantize method"
        option = options[name]
        assert given[name] in (None, ()), f"--{name} has a default of its own: {given[name]!r}"
        for cls, f in fields[name]:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if isinstance(default, bool):
                shown = ("on" if default else "off", "symmetric" if default else "asymmetric")
            else:
                shown = (str(default),)
            if default not in (None, ()) and name not in ("symmetric",) and cls.label != "backend nncf":
                assert any(s in (option.help or "") for s in shown), (
                    f"--{name}'s help lacks {shown} ({cls.label})"
                )


def test_every_field_is_reachable_from_the_command_line():
    reachable = set(SETTING_OPTIONS) | FROM_OTHER_OPTIONS
    missing = sorted(set(_fields()) - reachable)
    assert missing == []


def test_an_option_of_another_method_is_refused_with_the_setting_named(tiny_bert, tmp_path):
    from click.testing import CliRunner

    from compress.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["quantize", str(tiny_bert), "--damp", "0.1", "-o", str(out)])
    assert result.exit_code == 2 and "'damp' applies to method gptq" in result.stderr
    assert not out.exists()
