"""PassConfig: the typed, strict, serialisable settings of one pass.

Every pass declares a frozen dataclass. `from_dict` rejects unknown keys (listing the valid ones) and
checks each value against its annotation (int, float, bool, str, Literal choices, tuples of str,
nested configs such as Targets); every object, however made, checks its combinations of settings in
`validate()` when it is constructed. The same object comes out of the CLI, a YAML recipe, or Python,
so there is one place that says what is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from compress.errors import BadInput

T = TypeVar("T", bound="Settings")


def suggest(word: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(word, valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Settings:
    """Mixin for frozen dataclasses that load strictly from dicts."""

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
        data = dict(data or {})
        data.pop("kind", None)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        label = where or getattr(cls, "kind", cls.__name__)
        for key in data:
            if key not in fields:
                valid = sorted(fields)
                raise BadInput(
                    f"{label}: unknown setting '{key}'{suggest(key, valid)}; "
                    f"valid settings: {', '.join(valid)}."
                )
        values = {key: _coerce(value, hints[key], f"{label}.{key}") for key, value in data.items()}
        return cls(**values)

    def __post_init__(self) -> None:
        self.validate()  # settings are checked whenever they are made, in Python as from YAML

    def validate(self) -> None:
        """Override to check combinations of settings; raise BadInput."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        kind = getattr(self, "kind", None)
        if kind:
            out["kind"] = kind
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Settings) else _plain(value)
        return out

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where)
            except BadInput as exc:
                errors.append(str(exc))
        raise BadInput(errors[0])
    if origin is Literal:
        if value not in args:
            shown = ", ".join(str(a) for a in args)
            raise BadInput(
                f"{where}: unknown value '{value}'{suggest(str(value), [str(a) for a in args])}; "
                f"valid: {shown}."
            )
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise BadInput(f"{where}: expected a list, got {value!r}.")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, where) for v in value)
    if isinstance(hint, type) and issubclass(hint, Settings):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise BadInput(f"{where}: expected a mapping of settings, got {value!r}.")
        return hint.from_dict(value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise BadInput(f"{where}: expected true or false, got {value!r}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(f"{where}: expected an integer, got {value!r}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadInput(f"{where}: expected a number, got {value!r}.")
        if not math.isfinite(value):
            raise BadInput(f"{where}: expected a finite number, got {value}.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise BadInput(f"{where}: expected a string, got {value!r}.")
        return value
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class PassConfig(Settings):
    """Base of every pass's settings. Subclasses set `kind` and add their own fields."""

    kind: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False

    def uses_data(self) -> bool:
        """Whether these settings need calibration data (some passes need it only for some methods).

        A pass that uses data declares `calibration: Calibration | None = None`: its own calibration
        settings (None: the recipe's); the runner records there what it really drew.
        """
        return self.needs_data

    def resolve(self) -> PassConfig:
        """These settings with what they leave to the machine made concrete for this one (the plan
        calls it, so the output recipe records the values that ran); the settings themselves by default."""
        return self

    def accepts_data(self) -> bool:
        """Whether the pass uses calibration samples when they are given even though it does not need
        them (structured pruning traces the model on one and re-estimates batch norms on them)."""
        return self.uses_data()
