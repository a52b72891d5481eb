"""The quantize pass's settings: one frozen class per method, validated on construction.

- Int8Config: INT8 per output channel, round to nearest; activations none (weight-only), dynamic
  (per token at run time) or static (calibrated ranges), optionally SmoothQuant;
- Int4Config: INT4 group-wise by a data-free method: rtn, mse, hqq, or `auto`, which the plan
  resolves for the model's family (AUTO_METHOD) before anything runs;
- GptqConfig, AwqConfig: INT4 by a data-aware method (calibration data, block by block);
- NncfConfig: NNCF does the work on the model's ONNX export (compress.backends.nncf);
- Float16Config: weights rounded to bf16 or fp16, and the layers computing in that dtype.

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
from compress.targets import LayerType, Targets, matches

FLOAT16_SCHEMES = ("bf16", "fp16")
SCHEMES = ("int8", "int4", *FLOAT16_SCHEMES)
METHODS = ("auto", "rtn", "mse", "hqq", "gptq", "awq")
DATA_AWARE = ("gptq", "awq")
BACKENDS = ("compress", "nncf")
# INT4's method auto, by model family (compress.model.Model.family), chosen by measurement
# (benchmarks/defaults.py): a causal LM gets AWQ on the calibration data (the built-in wiki-train
# text unless the recipe names other data); every other model the data-free round to nearest.
AUTO_METHOD = {"causal-lm": "awq", "other": "rtn"}
# The calibration amount method auto draws at most (AWQ on Gemma-3-270M stays within minutes on 2 cores).
AUTO_CALIBRATION = {"samples": 8, "seq_len": 256}


@dataclass(frozen=True, kw_only=True)
class QuantizeTargets(Targets):
    """The layers INT8 and INT4 quantize unless told otherwise: Linear layers and embedding tables
    (with an output head tied to one). Quantizing the tables costs nothing measurable at INT8 and
    is most of the size of a small model (benchmarks/results/defaults.md); `types: [linear]` keeps
    them float."""

    types: tuple[LayerType, ...] = ("linear", "embedding")


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

    def scheme_of(self, names: list[str], table: bool = False) -> str:
        """The scheme of a weight owned by the layers `names` (`table`: an embedding table, maybe
        tied to an output head)."""
        return self.scheme

    def check_layers(self, names: list[str]) -> None:
        """BadInput for a setting that names layers none of which is targeted (see Int4Config)."""

    def calibration_text(self) -> str:
        c = getattr(self, "calibration", None)
        return f" on {c.data} ({c.samples} x {c.seq_len} tokens, seed {c.seed})" if c else ""


@dataclass(frozen=True, kw_only=True)
class Int8Config(QuantizeConfig):
    """INT8 weights, symmetric per output channel (round to nearest), on Linear layers and embedding
    tables by default (targets).

    activations: none (weight-only), dynamic (quantized per token at run time by the ONNX export's
        integer kernels) or static (one uint8 scale and zero point per layer input, calibrated on
        data); the torch module rounds them the same way.
    smooth: SmoothQuant's strength alpha (0 < alpha < 1; 0 is off) for activations dynamic or static:
        outlier activation channels are scaled down and the weights' columns up, calibrated on data.
        "auto" (static activations only): alpha searched per input tensor on the layers' output error
        (compress.passes.quantize.activation_ranges). None: "auto" with static activations, off with
        dynamic ones.
    bias_correction: static activations only: each layer's bias shifted by the mean output error
        that quantization causes on the calibration data (as NNCF's FastBiasCorrection). None: on with
        static activations.
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
    targets: QuantizeTargets = field(default_factory=QuantizeTargets)
    activations: Literal["none", "dynamic", "static"] = "none"
    smooth: float | Literal["auto"] | None = None
    bias_correction: bool | None = None
    weight_bits: Literal[7, 8] | None = None
    calibration: Calibration | None = None
    allow_nonfinite: bool = False

    def validate(self) -> None:
        if self.smooth == "auto":
            if self.activations != "static":
                raise BadInput(
                    "quantize.smooth: 'auto' searches alpha against static activation ranges; use it with "
                    "activations static, or give a number (0 < alpha < 1)."
                )
        elif self.smooth is not None and (self.activations == "none" or not 0 <= self.smooth < 1):
            raise BadInput(
                f"quantize.smooth: {self.smooth} is not valid; SmoothQuant takes 0 <= alpha < 1 (0: off) "
                "or 'auto', and applies to INT8 with activations dynamic or static."
            )
        if self.bias_correction and self.activations != "static":
            raise BadInput(
                "quantize.bias_correction: corrects the error of static activation ranges; use it with "
                "activations static."
            )
        _check_calibration(self)

    def uses_data(self) -> bool:
        return self.activations == "static" or self.smooth_alpha is not None

    @property
    def corrects_bias(self) -> bool:
        """Whether biases are corrected (see bias_correction)."""
        if self.bias_correction is not None:
            return self.bias_correction
        return self.activations == "static"

    @property
    def smooth_alpha(self) -> float | Literal["auto"] | None:
        """The SmoothQuant strength in effect (see smooth): a number, "auto" (searched) or None (off)."""
        if self.smooth is not None:
            return self.smooth or None  # 0 turns smoothing off
        return "auto" if self.activations == "static" else None

    @property
    def int8_bits(self) -> int:
        """The INT8 code width in effect (see weight_bits and resolve)."""
        if self.weight_bits is not None:
            return self.weight_bits
        return self.resolve().weight_bits or 8

    def resolve(self, family: str | None = None, calibration: Calibration | None = None) -> Int8Config:
        """weight_bits None made concrete for this CPU (the model's family does not matter)."""
        if self.weight_bits is not None or self.activations == "none":
            return self  # weight-only INT8 has no integer kernel to saturate: 8 bits everywhere
        from compress.hardware import detect

        saturates = detect().cpu.int8_saturates
        return dataclasses.replace(self, weight_bits=7 if saturates else 8)

    def describe(self) -> str:
        bits = "" if self.int8_bits == 8 else f" {self.int8_bits}-bit"
        acts = "" if self.activations == "none" else f", {self.activations} activations"
        alpha = self.smooth_alpha
        if alpha is not None:
            acts += ", smoothquant " + (f"{alpha:g}" if isinstance(alpha, float) else "alpha searched")
        return f"int8{bits} per-channel{acts}{self.calibration_text()}, rtn"


@dataclass(frozen=True, kw_only=True)
class Int4Config(QuantizeConfig):
    """INT4 weights, group-wise along the input dimension.

    method: auto (the default): the plan picks the method for the model's family before anything
        runs and the output recipe records it (AUTO_METHOD: awq on the built-in calibration text for
        a causal LM, rtn otherwise); or a data-free method: rtn (round to nearest), mse (per group,
        the clipping with the least squared error), hqq (HQQ-style refinement of the scale under a
        robust l_p loss); gptq and awq have classes of their own.
    group_size: a power of two >= 16 that divides each targeted row (ONNX Runtime's kernels need it).
    symmetric: an implicit zero point (True) or a stored one per group (False).
    embeddings: the scheme of the embedding tables the targets include (and of an output head tied
        to one): int8 per row (the default, as NNCF's INT4 does: a fifth of float where INT4 loses
        accuracy measurably), or int4 group-wise like the Linear layers. Leave the tables float with
        targets types [linear].
    keep_int8: layer-name globs kept at INT8 (per channel): mixed precision.
    allow_nonfinite: quantize weights holding NaN or Inf (NaN as 0, Inf as the row's largest finite
        magnitude) instead of refusing them.
    """

    label: ClassVar[str] = "scheme int4 (methods auto, rtn, mse, hqq)"
    data_use: ClassVar[str] = "none; method auto: calibration for a causal LM (wiki-train by default)"
    scheme: Literal["int4"] = "int4"
    method: Literal["auto", "rtn", "mse", "hqq"] = "auto"
    targets: QuantizeTargets = field(default_factory=QuantizeTargets)
    group_size: int = 128
    symmetric: bool = True
    embeddings: Literal["int8", "int4"] = "int8"
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

    def resolve(self, family: str | None = None, calibration: Calibration | None = None) -> QuantizeConfig:
        """Method auto made concrete for a model of `family` (compress.model.Model.family; None: an
        unknown model, AUTO_METHOD's "other"). A data-aware method chosen so calibrates on
        `calibration` (the recipe's) cut to at most AUTO_CALIBRATION's amount."""
        if self.method != "auto":
            return self
        method = AUTO_METHOD.get(family or "other", AUTO_METHOD["other"])
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(Int4Config) if f.name != "method"}
        if method in DATA_AWARE:
            base = calibration or Calibration()
            amount = {k: min(getattr(base, k), v) for k, v in AUTO_CALIBRATION.items()}
            shared["calibration"] = dataclasses.replace(base, **amount)
        return method_class({"scheme": "int4", "method": method}, "quantize")(method=method, **shared)

    def scheme_of(self, names: list[str], table: bool = False) -> str:
        """INT8 for an embedding table (`table`, with embeddings int8) or a weight owned by a layer
        that keep_int8 names, else INT4."""
        if table and self.embeddings == "int8":
            return "int8"
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
        if "embedding" in self.targets.types:
            text += f", embeddings {self.embeddings}"
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


FLOAT16_TYPES = ("linear", "embedding", "conv")


@dataclass(frozen=True, kw_only=True)
class Float16Config(QuantizeConfig):
    """16-bit weights (bf16 or fp16, round to nearest even), and the layers computing in that dtype.

    scheme: bf16 (float32's range, 8 significant bits: AMX-BF16 and AVX-512 BF16 on CPU, tensor
        cores on CUDA) or fp16 (10 significant bits, values up to 65504: tensor cores on CUDA).
    targets: by default every Linear, Embedding and Conv layer (also when a recipe's `targets`
        gives only include/exclude): embedding tables in 16 bits cost no measurable accuracy on
        MiniLM and are half of its file (benchmarks/results/bf16.md). The targeted layers' weights
        are stored in 16 bits; everything else (biases, norms, layers left out) is stored as it was,
        and a module holding float32 parameters runs in float32 (compress.precision).
    fp16's range ends at 65504: a weight beyond it is refused, and activations beyond it become
        inf (Gemma-3-270M: its residual stream overflows at layer 7, perplexity nan); bf16 has
        float32's range.
    allow_nonfinite: round weights holding NaN or Inf (NaN as 0, Inf as the row's largest finite
        magnitude) instead of refusing them, as the integer schemes do.
    """

    label: ClassVar[str] = "scheme bf16/fp16"
    scheme: Literal["bf16", "fp16"] = "bf16"  # type: ignore[assignment]
    method: Literal["rtn"] = "rtn"  # rounding to the nearest 16-bit value
    targets: Targets = field(default_factory=lambda: Targets(types=FLOAT16_TYPES))
    allow_nonfinite: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "") -> QuantizeConfig:
        """A `targets` mapping without `types` keeps this class's types (not Targets' own Linear)."""
        settings = dict(data or {})
        targets = settings.get("targets")
        if isinstance(targets, Mapping) and "types" not in targets:
            settings["targets"] = {**targets, "types": list(FLOAT16_TYPES)}
        return super().from_dict(settings, where)

    def describe(self) -> str:
        return f"{self.scheme} weights and compute ({', '.join(self.targets.types)})"


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
    method = settings.get("method") or "rtn"
    scheme = settings.get("scheme", "int4" if method in ("auto", "mse", "hqq", *DATA_AWARE) else "int8")
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
    if scheme in FLOAT16_SCHEMES:
        return _float16_class(settings, scheme, method, where)
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


def _float16_class(settings: dict[str, Any], scheme: str, method: str, where: str) -> type[QuantizeConfig]:
    """Float16Config, after the sentences for the settings of the integer schemes that do not apply."""
    if method != "rtn":
        raise BadInput(
            f"{where}: method {method} chooses INT4 codes; scheme {scheme} rounds each weight to the nearest "
            "16-bit value (leave method unset)."
        )
    activations = settings.pop("activations", "none")
    if activations != "none":
        raise BadInput(
            f"{where}.activations: '{activations}' needs scheme int8; with scheme {scheme} the layers "
            f"compute in {scheme}, so activations are {scheme} already."
        )
    return Float16Config


def embedding_settings(embeddings: str | bool | None, scheme: str, backend: str = "compress") -> dict:
    """The settings `--embeddings` (and `quantize(embeddings=...)`) asks for: {} for the defaults;
    float (or False): the embedding tables left out of the targets; int8 or int4 (True: the pass's
    own scheme): the embedding tables targeted, at that scheme (bf16/fp16 store them at their own)."""
    if embeddings is None:
        return {}
    own = list(FLOAT16_TYPES) if scheme in FLOAT16_SCHEMES else ["linear", "embedding"]
    if embeddings is False or embeddings == "float":
        return {"targets": {"types": [t for t in own if t != "embedding"]}}
    chosen = scheme if embeddings is True else embeddings
    if chosen not in SCHEMES:
        raise BadInput(f"quantize.embeddings: unknown value '{embeddings}'; valid: int8, int4, float.")
    out: dict[str, Any] = {"targets": {"types": own}}
    if scheme == "int4" and backend == "compress":
        out["embeddings"] = chosen
    elif chosen != scheme:
        raise BadInput(
            f"quantize.embeddings: {chosen} needs scheme int4 and backend compress; here the embedding "
            f"tables take the pass's scheme ({scheme}): give `--embeddings` alone (True), or float."
        )
    return out


QuantizeConfig.METHOD_CLASSES = (Int8Config, Int4Config, GptqConfig, AwqConfig, NncfConfig, Float16Config)
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
