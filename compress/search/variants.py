"""The values a search may give one pass's settings: choices, ranges, and the checks that every one
of them is a setting the pass accepts (the same checks a recipe's pass gets).

A variant is one pass's settings in which a value may be a choice (a list, for a setting that takes
one value) or a range ({low, high, step, log}, for a numeric setting); everything else is fixed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from compress.config import PassConfig, Settings, suggest
from compress.errors import BadInput
from compress.yamlfile import Located

RANGE_KEYS = ("low", "high", "step", "log")
TEACHER = "the model searched"  # stands for the teacher while a space is checked
COMBINATIONS_CHECKED = 64  # all combinations of a variant's choices are checked when this few


@dataclass(frozen=True)
class Choice:
    """One of a list of values (Optuna's categorical distribution)."""

    values: tuple[Any, ...]

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def contains(self, value: Any) -> bool:
        return any(_same(value, v) for v in self.values)

    def corners(self) -> tuple[Any, ...]:
        return self.values

    def to_plain(self) -> Any:
        return list(self.values)


@dataclass(frozen=True)
class Range:
    """A number between low and high, on a grid of `step` when given, on a log scale with `log`."""

    low: float
    high: float
    step: float | None = None
    log: bool = False
    integer: bool = False

    def suggest(self, trial: Any, name: str) -> Any:
        if self.integer:
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        value = trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)
        return round(value, 10)  # 0.1 + 2 x 0.05 is 0.2, not 0.20000000000000004

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not self.low - 1e-9 <= value <= self.high + 1e-9:
            return False
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return abs(k - round(k)) < 1e-6

    def corners(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def to_plain(self) -> Any:
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step is not None:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out


@dataclass(frozen=True)
class Variant:
    """One pass's settings; values that are a Choice or a Range are searched."""

    name: str
    kind: str
    settings: dict[str, Any]

    @property
    def searched(self) -> dict[str, Choice | Range]:
        return {k: v for k, v in self.settings.items() if isinstance(v, Choice | Range)}

    def first(self) -> dict[str, Any]:
        """The settings with each searched one at its first value."""
        return {k: v.corners()[0] if isinstance(v, Choice | Range) else v for k, v in self.settings.items()}

    def to_plain(self) -> dict[str, Any]:
        return {k: v.to_plain() if isinstance(v, Choice | Range) else v for k, v in self.settings.items()}


def parse_variant(loc: Located, kind: str, name: str, data: Any, path: str) -> Variant:
    if not isinstance(data, dict):
        raise loc.error(path, f"{path}: a variant is a mapping of the {kind} pass's settings.")
    for key, why in (
        ("kind", "the step gives it"),
        ("teacher", "the search distills from the model it searches"),
    ):
        if key in data and (key == "kind" or kind == "distill"):
            raise loc.error(f"{path}.{key}", f"{path}.{key}: leave it out ({why}).")
    hints = _field_hints(kind)
    settings = {}
    for key, value in data.items():
        key = str(key)
        if key not in hints:
            valid = sorted(hints)
            raise loc.error(
                f"{path}.{key}",
                f"{path}: unknown setting '{key}'{suggest(key, valid)} for a {kind} pass; "
                f"valid settings: {', '.join(valid)}.",
            )
        settings[key] = _value(loc, f"{path}.{key}", value, hints[key])
    variant = Variant(name, kind, settings)
    _check_variant(loc, variant, path)
    return variant


def _field_hints(kind: str) -> dict[str, Any]:
    """Each setting the pass's settings classes take, with its type (the first class that has it)."""
    from compress.registry import get_pass

    config = get_pass(kind).config
    classes = getattr(config, "METHOD_CLASSES", ()) or (config,)
    hints: dict[str, Any] = {}
    for cls in classes:
        types = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init and f.name not in hints:
                hints[f.name] = types[f.name]
    if kind == "quantize":
        hints["backend"] = str  # sugar that picks the settings class, as in a recipe
    return hints


def _base(hint: Any) -> Any:
    """The type of a setting without its None: `int | None` -> int."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return _base(args[0]) if len(args) == 1 else hint
    return hint


def _shape(hint: Any) -> str:
    """'tuple', 'settings', 'number' or 'scalar': how a setting's value may be searched."""
    hint = _base(hint)
    if get_origin(hint) is tuple:
        return "tuple"
    if isinstance(hint, type) and issubclass(hint, Settings):
        return "settings"
    numbers = get_origin(hint) is Literal and all(
        isinstance(a, int | float) and not isinstance(a, bool) for a in get_args(hint)
    )
    return "number" if hint in (int, float) or numbers else "scalar"


def _value(loc: Located, path: str, value: Any, hint: Any) -> Any:
    shape = _shape(hint)
    if isinstance(value, list) and shape != "tuple":
        if not value:
            raise loc.error(path, f"{path}: an empty list of choices; give at least one value.")
        bad = [v for v in value if isinstance(v, dict | list)]
        if bad:
            raise loc.error(
                path, f"{path}: a choice is one plain value (not {bad[0]!r}); write one variant each."
            )
        return Choice(tuple(dict.fromkeys(value)))
    if isinstance(value, dict) and "low" in value and "high" in value and set(value) <= set(RANGE_KEYS):
        if shape != "number":
            raise loc.error(path, f"{path}: a range {{low, high}} applies to a numeric setting only.")
        return _range(loc, path, value, hint)
    return value


def _range(loc: Located, path: str, data: dict, hint: Any) -> Range:
    low, high, step, log = data["low"], data["high"], data.get("step"), data.get("log", False)
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers) or not isinstance(
        log, bool
    ):
        raise loc.error(path, f"{path}: low, high and step must be numbers and log true or false.")
    integer = _base(hint) is int
    if not low < high:
        raise loc.error(
            path, f"{path}: low ({low}) must be below high ({high}); for one value write it alone."
        )
    if step is not None:
        if step <= 0:
            raise loc.error(path, f"{path}: step must be positive, got {step}.")
        k = (high - low) / step
        if abs(k - round(k)) > 1e-6:
            raise loc.error(path, f"{path}: step {step} does not divide high - low ({high - low:g}).")
        if log:
            raise loc.error(
                path, f"{path}: a range is either on a grid (step) or on a log scale (log), not both."
            )
    if log and low <= 0:
        raise loc.error(path, f"{path}: a log range needs low above 0, got {low}.")
    if integer and any(isinstance(v, float) and not float(v).is_integer() for v in numbers):
        raise loc.error(path, f"{path}: this setting takes integers; low, high and step must be integers.")
    return Range(float(low), float(high), None if step is None else float(step), log, bool(integer))


def _check_variant(loc: Located, variant: Variant, path: str) -> None:
    """Build the pass's settings with each searched value (and, when they are few, every combination):
    a value the pass refuses is reported here with its line, not when a trial meets it."""
    searched = variant.searched
    base = variant.first()
    _try(loc, variant.kind, base, path, path, "")
    for key, dist in searched.items():
        for value in dist.corners():
            _try(loc, variant.kind, {**base, key: value}, path, f"{path}.{key}", f"{key} = {value!r}: ")
    sizes = [len(d.corners()) for d in searched.values()]
    if 1 < math.prod(sizes) <= COMBINATIONS_CHECKED:
        keys = list(searched)
        for values in itertools.product(*(searched[k].corners() for k in keys)):
            combination = dict(zip(keys, values, strict=True))
            shown = ", ".join(f"{k} = {v!r}" for k, v in combination.items())
            _try(loc, variant.kind, {**base, **combination}, path, path, f"the combination {shown}: ")


def _try(loc: Located, kind: str, settings: dict, where: str, blame: str, prefix: str) -> None:
    try:
        build(kind, settings, where)
    except BadInput as exc:
        if not prefix:
            raise loc.relocate(exc, where) from None
        raise loc.error(blame, f"{where}: {prefix}{exc}") from None


def build(kind: str, settings: dict[str, Any], where: str) -> PassConfig:
    """A pass's settings from a variant's values (BadInput when the pass refuses them)."""
    from compress.registry import config_from_dict

    data = {"kind": kind, **settings}
    if kind == "distill":
        data.setdefault("teacher", TEACHER)
    return config_from_dict(data, where)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind (True is not 1, 0.5 is 0.5)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b
