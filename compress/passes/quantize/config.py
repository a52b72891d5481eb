"""The quantize pass's settings: one frozen class per method, validated on construction.

- Int8Config: INT8 per output channel, round to nearest; activations none (weight-only), dynamic
  (per token at run time) or static (calibrated ranges), optionally SmoothQuant;
- Int4Config: INT4 group-wise by a data-free method: rtn, mse, hqq;
- GptqConfig, AwqConfig: INT4 by a data-aware method (calibration data, block by block);
- NncfConfig: NNCF does the work on the model's ONNX export (compress.backends.nncf).

In YAML (and `compress.Quantize(...)`) all of them are `kind: quantize`; `scheme`, `method` and
`backend` pick the class (`QuantizeConfig.from_dict`), and each class writes them back in `to_dict`,
so a recipe round-trips. Defaults are the real ones: what `compress passes` and `--help` show is
what runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from compress.calibration import Calibration
from compress.config import PassConfig
from compress.errors import BadInput
from compress.targets import Targets, matches

SCHEMES = ("int8", "int4")
METHODS = ("rtn", "mse", "hqq", "gptq", "awq")
DATA_AWARE = ("gptq", "awq")
BACKENDS = ("compress", "nncf")


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig(PassConfig):
    """What every quantize method shares: the layers it targets (Linear by default).

    `QuantizeConfig.from_dict({...})` picks the method's class from scheme, method and backend.
    """

    kind: ClassVar[str] = "quantize"
    label: ClassVar[str] = "quantize"  # how messages name the method: "scheme int8", "method gptq"
    data_use: ClassVar[str] = "none"  # which settings need calibration data, for `compress passes`
    METHOD_CLASSES: ClassVar[tuple[type[QuantizeConfig], ...]] = ()  # every method's class, set below
    scheme: str = "int8"
    method: str = "rtn"
    targets: Targets = field(default_factory=Targets)

    def __new__(cls, *args: Any, **settings: Any):
        # `QuantizeConfig(scheme="int4", method="gptq")` (and `compress.Quantize(...)`) makes the class
        # of that method, as a recipe's `kind: quantize` does.
        if cls is QuantizeConfig:
            cls = method_class(dict(settings), "quantize")
            _check_keys(settings, cls, "quantize")
        return super().__new__(cls)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "") -> QuantizeConfig:
        if cls is not QuantizeConfig:
            return super().from_dict(data, where)
        settings = dict(data or {})
        target = method_class(settings, where or "quantize")
        if settings.get("backend") == "compress":
            settings.pop("backend")
        _check_keys(settings, target, where or "quantize")
        return target.from_dict(settings, where)

    def scheme_of(self, names: list[str]) -> str:
        """The scheme of a weight owned by the layers `names`."""
        return self.scheme

    def check_layers(self, names: list[str]) -> None:
        """BadInput for a setting that names layers none of which is targeted (see Int4Config)."""

    def calibration_text(self) -> str:
        c = getattr(self, "calibration", None)
        return f" on {c.data} ({c.samples} x {c.seq_len} tokens, seed {c.seed})" if c else ""


@dataclass(frozen=True, kw_only=True)
class Int8Config(QuantizeConfig):
    """INT8 weights, symmetric per output channel (round to nearest).

    activations: none (weight-only), dynamic (quantized per token at run time by the ONNX export's
        integer kernels) or static (one uint8 scale and zero point per layer input, calibrated on
        data); the torch module rounds them the same way.
    smooth: SmoothQuant's strength alpha (0 < alpha < 1; 0 is off) for activations dynamic or static:
        outlier activation channels are scaled down and the weights' columns up, calibrated on data.
        None: 0.5 with static activations, off with dynamic ones.
    weight_bits: 8 (codes -127..127) or 7 (-63..63). None: chosen for the machine when the run is
        planned (and recorded): 7 with quantized activations on an x86 CPU without VNNI or AMX, whose
        u8 x s8 kernel adds pairs of products in int16 and saturates with 8-bit weights; else 8.
    calibration: this pass's calibration data (static activations, smoothing); None: the recipe's.
    allow_nonfinite: quantize weights holding NaN or Inf (NaN as 0, Inf as the row's largest finite
        magnitude) instead of refusing them.
    """

    label: ClassVar[str] = "scheme int8"
    data_use: ClassVar[str] = "calibration with activations static or smooth"
    scheme: Literal["int8"] = "int8"
    method: Literal["rtn"] = "rtn"
    activations: Literal["none", "dynamic", "static"] = "none"
    smooth: float | None = None
    weight_bits: Literal[7, 8] | None = None
    calibration: Calibration | None = None
    allow_nonfinite: bool = False

    def validate(self) -> None:
        if self.smooth is not None and (self.activations == "none" or not 0 <= self.smooth < 1):
            raise BadInput(
                f"quantize.smooth: {self.smooth} is not valid; SmoothQuant takes 0 <= alpha < 1 (0: off) "
                "and applies to INT8 with activations dynamic or static."
            )
        _check_calibration(self)

    def uses_data(self) -> bool:
        return self.activations == "static" or self.smooth_alpha is not None

    @property
    def smooth_alpha(self) -> float | None:
        """The SmoothQuant strength in effect (see smooth)."""
        if self.smooth is not None:
            return self.smooth or None  # 0 turns smoothing off
        return 0.5 if self.activations == "static" else None

    @property
    def int8_bits(self) -> int:
        """The INT8 code width in effect (see weight_bits and resolve)."""
        if self.weight_bits is not None:
            return self.weight_bits
        return self.resolve().weight_bits or 8

    def resolve(self) -> Int8Config:
        if self.weight_bits is not None or self.activations == "none":
            return self  # weight-only INT8 has no integer kernel to saturate: 8 bits everywhere
        from compress.hardware import detect

        saturates = detect().cpu.int8_saturates
        return dataclasses.replace(self, weight_bits=7 if saturates else 8)

    def describe(self) -> str:
        bits = "" if self.int8_bits == 8 else f" {self.int8_bits}-bit"
        acts = "" if self.activations == "none" else f", {self.activations} activations"
        if self.smooth_alpha is not None:
            acts += f", smoothquant {self.smooth_alpha:g}"
        return f"int8{bits} per-channel{acts}{self.calibration_text()}, rtn"


@dataclass(frozen=True, kw_only=True)
class Int4Config(QuantizeConfig):
    """INT4 weights, group-wise along the input dimension, by a data-free method.

    method: rtn (round to nearest), mse (per group, the clipping with the least squared error) or
        hqq (HQQ-style refinement of the scale under a robust l_p loss).
    group_size: a power of two >= 16 that divides each targeted row (ONNX Runtime's kernels need it).
    symmetric: an implicit zero point (True) or a stored one per group (False).
    keep_int8: layer-name globs kept at INT8 (per channel): mixed precision.
    allow_nonfinite: quantize weights holding NaN or Inf (NaN as 0, Inf as the row's largest finite
        magnitude) instead of refusing them.
    """

    label: ClassVar[str] = "scheme int4 (methods rtn, mse, hqq)"
    scheme: Literal["int4"] = "int4"
    method: Literal["rtn", "mse", "hqq"] = "rtn"
    group_size: int = 128
    symmetric: bool = True
    keep_int8: tuple[str, ...] = ()
    allow_nonfinite: bool = False

    def validate(self) -> None:
        g = self.group_size
        if g < 16 or g & (g - 1):
            raise BadInput(
                f"quantize.group_size: {g} is not a power of two >= 16 "
                "(ONNX Runtime's INT4 kernels need one)."
            )
        _check_calibration(self)

    def scheme_of(self, names: list[str]) -> str:
        """INT8 for a weight owned by a layer that keep_int8 names, else INT4."""
        if any(matches(name, pattern) for name in names for pattern in self.keep_int8):
            return "int8"
        return "int4"

    def check_layers(self, names: list[str]) -> None:
        for pattern in self.keep_int8:
            if not any(matches(name, pattern) for name in names):
                shown = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
                raise BadInput(
                    f"quantize.keep_int8: pattern '{pattern}' matches no targeted layer; "
                    f"layers look like: {shown}."
                )

    def describe(self) -> str:
        text = f"int4 group {self.group_size}, {'sym' if self.symmetric else 'asym'}, {self.method}"
        text += self.calibration_text()
        if self.keep_int8:
            text += f", int8: {', '.join(self.keep_int8)}"
        return text


@dataclass(frozen=True, kw_only=True)
class GptqConfig(Int4Config):
    """INT4 by GPTQ: columns quantized one at a time, each one's error pushed onto the rest through
    the inverse Hessian of the layer's inputs (calibration data, block by block).

    damp: damping, a fraction of the Hessian's mean diagonal. act_order: the busiest input columns
    first (group scales fixed up front). clip: search each group's clipping range.
    calibration: this pass's calibration data; None: the recipe's.
    """

    label: ClassVar[str] = "method gptq"
    data_use: ClassVar[str] = "calibration"
    method: Literal["gptq"] = "gptq"  # type: ignore[assignment]
    damp: float = 0.01
    act_order: bool = True
    clip: bool = True
    calibration: Calibration | None = None

    def validate(self) -> None:
        super().validate()
        if not 0 < self.damp < 1:
            raise BadInput(f"quantize.damp: {self.damp} is not between 0 and 1 (typical: 0.01).")

    def uses_data(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class AwqConfig(Int4Config):
    """INT4 by AWQ: per input channel, the scale mean|x|^a (a searched) with the least output error,
    folded into the layer that produces the input; then each group's clipping (clip) searched on the
    same error. calibration: this pass's calibration data; None: the recipe's."""

    label: ClassVar[str] = "method awq"
    data_use: ClassVar[str] = "calibration"
    method: Literal["awq"] = "awq"  # type: ignore[assignment]
    clip: bool = True
    calibration: Calibration | None = None

    def uses_data(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class NncfConfig(QuantizeConfig):
    """NNCF quantizes the model's FP32 ONNX export (the result is model.onnx, run by ONNX Runtime).

    scheme int8: NNCF's static post-training INT8 (weights and activations, ranges calibrated on the
    calibration data); int4: its weight compression (method rtn, awq or gptq; group_size, symmetric).
    Embedding tables stay float unless targets.types includes embedding. calibration: None: the
    recipe's (int8 and the data-aware int4 methods use it).
    """

    label: ClassVar[str] = "backend nncf"
    data_use: ClassVar[str] = "calibration for int8, awq and gptq"
    METHODS: ClassVar[tuple[str, ...]] = ("rtn", "awq", "gptq")
    backend: Literal["nncf"] = "nncf"
    scheme: Literal["int8", "int4"] = "int8"  # type: ignore[assignment]
    method: Literal["rtn", "awq", "gptq"] = "rtn"  # type: ignore[assignment]
    group_size: int = 128
    symmetric: bool = True
    calibration: Calibration | None = None

    def validate(self) -> None:
        from compress.backends.nncf import check_settings

        check_settings(self)
        _check_calibration(self)

    def uses_data(self) -> bool:
        return self.scheme == "int8" or self.method in DATA_AWARE

    def describe(self) -> str:
        from compress.backends.nncf import describe

        return describe(self)


def method_class(settings: dict[str, Any], where: str) -> type[QuantizeConfig]:
    """The settings class that `settings` (a recipe's quantize pass) describe; sugar keys are
    checked here so a wrong combination gets a sentence about the combination, not a field."""
    backend = settings.get("backend", "compress")
    from compress.config import suggest

    if backend not in BACKENDS:
        raise BadInput(
            f"{where}.backend: unknown value '{backend}'{suggest(str(backend), list(BACKENDS))}; "
            f"valid: {', '.join(BACKENDS)}."
        )
    method = settings.get("method", "rtn")
    scheme = settings.get("scheme", "int4" if method in ("mse", "hqq", *DATA_AWARE) else "int8")
    if backend == "nncf":
        if method not in NncfConfig.METHODS:
            raise BadInput(
                f"{where} (backend nncf): method '{method}' has no NNCF equivalent; use rtn, awq or "
                "gptq (int4)."
            )
        activations = settings.pop("activations", "none")
        if activations == "dynamic":
            raise BadInput(
                f"{where} (backend nncf): activations 'dynamic' is not an NNCF mode; NNCF's int8 is static "
                "(activation ranges calibrated on data): use activations static or leave it unset."
            )
        return NncfConfig
    if scheme not in SCHEMES:
        raise BadInput(
            f"{where}.scheme: unknown value '{scheme}'{suggest(str(scheme), list(SCHEMES))}; "
            f"valid: {', '.join(SCHEMES)}."
        )
    if method not in METHODS:
        raise BadInput(
            f"{where}.method: unknown value '{method}'{suggest(str(method), list(METHODS))}; "
            f"valid: {', '.join(METHODS)}."
        )
    if scheme == "int8" and method != "rtn":
        raise BadInput(
            f"{where}: method {method} chooses INT4 codes; use scheme int4 with it (INT8 is round to "
            "nearest, which is already within a fraction of a percent of float)."
        )
    if scheme == "int4":
        activations = settings.pop("activations", "none")
        if activations != "none":
            raise BadInput(f"{where}.activations: '{activations}' needs scheme int8 (INT4 is weight-only).")
    return {"gptq": GptqConfig, "awq": AwqConfig}.get(method, Int4Config if scheme == "int4" else Int8Config)


QuantizeConfig.METHOD_CLASSES = (Int8Config, Int4Config, GptqConfig, AwqConfig, NncfConfig)
Quantize = QuantizeConfig  # `compress.Quantize(scheme="int4", group_size=32)` -> Int4Config(...)


def _check_keys(settings: dict, target: type[QuantizeConfig], where: str) -> None:
    """An unknown key gets a suggestion from every method's settings, and a setting of another method
    says which one takes it (`group_size` with scheme int8)."""
    from compress.config import suggest

    mine = {f.name for f in dataclasses.fields(target)} | {"kind"}
    classes = QuantizeConfig.METHOD_CLASSES
    for key in settings:
        if key in mine:
            continue
        owners = [c for c in classes if key in {f.name for f in dataclasses.fields(c)}]
        if owners:
            takes = ", ".join(c.label for c in owners)
            raise BadInput(
                f"{where}: setting '{key}' applies to {takes}, not to {target.label}; valid settings for "
                f"{target.label}: {', '.join(sorted(mine - {'kind'}))}."
            )
        every = sorted({f.name for c in classes for f in dataclasses.fields(c)})
        raise BadInput(
            f"{where}: unknown setting '{key}'{suggest(key, every)}; valid settings for {target.label}: "
            f"{', '.join(sorted(mine - {'kind'}))}."
        )


def _check_calibration(cfg: Any) -> None:
    if getattr(cfg, "calibration", None) is not None and not cfg.uses_data():
        raise BadInput(
            f"quantize.calibration: {cfg.describe()} needs no calibration data; calibration settings apply "
            "to gptq, awq, static activations and smoothing."
        )


def int4_cols_fit(cfg: Int4Config, name: str, shape: tuple[int, ...]) -> None:
    """BadInput when the group size does not divide a targeted weight's rows."""
    cols = math.prod(shape[1:])
    if cols % cfg.group_size:
        raise BadInput(
            f"quantize: group size {cfg.group_size} does not divide the {cols} columns of '{name}' "
            f"(shape {list(shape)}); choose a group size that divides every targeted row, or exclude "
            "this layer."
        )
