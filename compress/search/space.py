"""The search space of `compress search`: which passes, which settings, which values, in YAML.

A space file sits next to the recipes (recipes/search/default.yaml) and is read as strictly as a
recipe: every setting must be one the pass takes, every value one it accepts, and a mistake is one
sentence with the file and line, before any work starts.

    version: 1
    name: default
    seeds: ["../*.yaml"]                  # recipes tried first (each must be a point of this space)
    calibration: {data: wiki-train, samples: 32, seq_len: 128}   # for passes that use data
    prune:                                # step 1 (optional: the search may leave it out)
      optional: true
      variants:
        neurons: {pattern: neurons, method: activation, sparsity: {low: 0.1, high: 0.5, step: 0.05}}
    distill:                              # recovery after pruning; the teacher is the model searched
      optional: true
      variants:
        short: {data: wiki-train, training: {max_steps: 40, batch_size: 8}}
    quantize:
      embeddings: [float, same, int8]     # the embedding tables: left float, as the layers, or INT8
      mixed_precision: {layers: [0, 2, 4]}  # the N most sensitive Linear layers kept at higher precision
      variants:
        int8: {scheme: int8, activations: [none, dynamic]}
        int4: {scheme: int4, method: [rtn, hqq], group_size: [32, 128], symmetric: [true, false]}

A variant is one pass's settings in which a value may be a choice (a list, for a setting that takes one
value) or a range ({low, high, step, log}, for a numeric setting); everything else is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.calibration import Calibration
from compress.config import Settings, suggest
from compress.errors import BadInput
from compress.recipe import located_settings
from compress.search.variants import Variant, parse_variant
from compress.yamlfile import Located, load_yaml, load_yaml_file

SPACE_VERSION = 1
TOP_KEYS = ("version", "name", "description", "seeds", "calibration", "prune", "distill", "quantize")
STEPS = ("prune", "distill", "quantize")  # in the order their passes run
STEP_KEYS = {
    "prune": ("optional", "variants"),
    "distill": ("optional", "variants"),
    "quantize": ("optional", "variants", "embeddings", "mixed_precision"),
}
EMBEDDINGS = ("float", "same", "int8")
OFF = "off"


@dataclass(frozen=True, kw_only=True)
class Measure(Settings):
    """How layer sensitivity is measured (once per model, cached): the model's output error when one
    Linear layer alone is INT4 (round to nearest, groups of group_size) on calibration text."""

    data: str = "wiki-train"
    samples: int = 8
    seq_len: int = 128
    group_size: int = 32
    symmetric: bool = False

    def validate(self) -> None:
        Calibration(data=self.data, samples=self.samples, seq_len=self.seq_len)
        g = self.group_size
        if g < 16 or g & (g - 1):
            raise BadInput(f"mixed_precision.measure.group_size: {g} is not a power of two >= 16.")


@dataclass(frozen=True, kw_only=True)
class MixedPrecision(Settings):
    """layers: how many of the most sensitive Linear layers stay at higher precision (INT8 in an INT4
    pass, float in an INT8 pass), a choice of counts; measure: how sensitivity is measured."""

    layers: tuple[int, ...] = (0,)
    measure: Measure = field(default_factory=Measure)

    def validate(self) -> None:
        if not self.layers:
            raise BadInput("mixed_precision.layers: give at least one count of layers (e.g. [0, 2, 4]).")
        if any(n < 0 for n in self.layers):
            raise BadInput(f"mixed_precision.layers: counts must not be negative, got {list(self.layers)}.")


@dataclass(frozen=True)
class Step:
    kind: str
    optional: bool
    variants: dict[str, Variant]
    embeddings: tuple[str, ...] = ("float",)
    mixed_precision: MixedPrecision | None = None

    def names(self) -> list[str]:
        return list(self.variants) + ([OFF] if self.optional else [])


@dataclass(frozen=True)
class SearchSpace:
    """The passes a search may combine and the values each setting may take."""

    steps: dict[str, Step]
    name: str = ""
    description: str = ""
    seeds: tuple[Path, ...] = ()
    calibration: Calibration | None = None
    source: str = "<space>"

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        located = load_yaml_file(path)
        return _parse(located, Path(path).parent, Path(path).stem)

    @classmethod
    def loads(cls, text: str, source: str = "<space>", folder: str | Path = ".") -> SearchSpace:
        return _parse(load_yaml(text, source), Path(folder), "")

    @property
    def needs_sensitivity(self) -> bool:
        mixed = self.steps.get("quantize") and self.steps["quantize"].mixed_precision
        return bool(mixed and any(n > 0 for n in mixed.layers))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": SPACE_VERSION, "name": self.name}
        if self.description:
            out["description"] = self.description
        out["seeds"] = [str(p) for p in self.seeds]
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        for kind, step in self.steps.items():
            section: dict[str, Any] = {"optional": step.optional}
            section["variants"] = {n: v.to_plain() for n, v in step.variants.items()}
            if kind == "quantize":
                section["embeddings"] = list(step.embeddings)
                if step.mixed_precision is not None:
                    section["mixed_precision"] = step.mixed_precision.to_dict()
            out[kind] = section
        return out


def _parse(loc: Located, folder: Path, default_name: str) -> SearchSpace:
    data = loc.data
    if not isinstance(data, dict):
        raise loc.error(
            "", "a search space is a YAML mapping with at least one step (prune, distill, quantize)."
        )
    _check_keys(loc, "", data, TOP_KEYS)
    if data.get("version", SPACE_VERSION) != SPACE_VERSION:
        raise loc.error("version", f"space version {data['version']!r}; this compress reads {SPACE_VERSION}.")
    for key in ("name", "description"):
        if not isinstance(data.get(key, ""), str):
            raise loc.error(key, f"'{key}' must be text.")
    steps = {kind: _step(loc, kind, data[kind]) for kind in STEPS if kind in data}
    if not steps:
        raise loc.error("", "the search space is empty: give at least one step (prune, distill or quantize).")
    if "distill" in steps and "prune" not in steps:
        raise loc.error(
            "distill", "distill: the recovery step runs after pruning, and the space has no prune step."
        )
    calibration = None
    if "calibration" in data:
        calibration = located_settings(loc, Calibration, data["calibration"], "calibration")
    return SearchSpace(
        steps=steps,
        name=data.get("name") or default_name,
        description=data.get("description") or "",
        seeds=_seeds(loc, data.get("seeds"), folder),
        calibration=calibration,
        source=loc.source,
    )


def _check_keys(loc: Located, path: str, data: dict, valid: tuple[str, ...]) -> None:
    for key in data:
        if key not in valid:
            where = f"{path}.{key}" if path else str(key)
            raise loc.error(
                where,
                f"{path + ': ' if path else ''}unknown key '{key}'{suggest(str(key), list(valid))}; "
                f"valid keys: {', '.join(valid)}.",
            )


def _seeds(loc: Located, items: Any, folder: Path) -> tuple[Path, ...]:
    if items is None:
        return ()
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise loc.error("seeds", "'seeds' must be a list of recipe files or patterns (e.g. ['../*.yaml']).")
    found: list[Path] = []
    for i, pattern in enumerate(items):
        matched = sorted(p for p in folder.glob(pattern) if p.is_file())
        if not matched:
            raise loc.error(f"seeds[{i}]", f"seeds[{i}]: '{pattern}' matches no file beside {loc.source}.")
        found += [p.resolve() for p in matched if p.resolve() not in found]
    return tuple(found)


def _step(loc: Located, kind: str, data: Any) -> Step:
    if not isinstance(data, dict):
        raise loc.error(kind, f"'{kind}' must be a mapping with 'variants'.")
    _check_keys(loc, kind, data, STEP_KEYS[kind])
    optional = data.get("optional", kind == "distill")
    if not isinstance(optional, bool):
        raise loc.error(f"{kind}.optional", f"{kind}.optional: expected true or false, got {optional!r}.")
    variants = data.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise loc.error(
            f"{kind}.variants" if "variants" in data else kind,
            f"{kind}.variants: the step is empty; give at least one variant (a name and its settings).",
        )
    if OFF in variants:
        raise loc.error(
            f"{kind}.variants.{OFF}", f"{kind}.variants: '{OFF}' is reserved (use optional: true)."
        )
    parsed = {
        str(n): parse_variant(loc, kind, str(n), v, f"{kind}.variants.{n}") for n, v in variants.items()
    }
    embeddings: tuple[str, ...] = ("float",)
    mixed = None
    if kind == "quantize":
        embeddings = _embeddings(loc, data.get("embeddings", ["float"]))
        if "mixed_precision" in data:
            mixed = located_settings(loc, MixedPrecision, data["mixed_precision"], "quantize.mixed_precision")
    return Step(kind, optional, parsed, embeddings, mixed)


def _embeddings(loc: Located, value: Any) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise loc.error("quantize.embeddings", f"quantize.embeddings: a list of {', '.join(EMBEDDINGS)}.")
    for v in values:
        if v not in EMBEDDINGS:
            raise loc.error(
                "quantize.embeddings",
                f"quantize.embeddings: unknown value '{v}'{suggest(str(v), list(EMBEDDINGS))}; valid: "
                f"{', '.join(EMBEDDINGS)} (float: left as they are; same: quantized as the layers; int8).",
            )
    return tuple(dict.fromkeys(values))
