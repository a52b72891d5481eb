"""Recipe: ordered passes, the calibration data they use, export steps, the evaluation, the gate.

A recipe file is YAML:

    version: 1
    name: int8-dynamic
    passes:
      - {kind: quantize, scheme: int8, activations: dynamic, targets: {types: [linear, embedding]}}
    calibration: {data: wiki-train, samples: 128}      # for passes that use data (optional)
    export: [{format: onnx}]                           # files a runtime loads (optional)
    model: {module: cnn.py:DigitsCNN, args: {width: 16}}  # a checkpoint without config.json (optional)
    evaluate: {task: auto, devices: [cpu], runtimes: [torch, onnxruntime], latency: {budget_s: 60}}
    gate:
      - {metric: accuracy.retention, min: 0.99}
      - {metric: latency.cpu.onnxruntime.speedup, min: 1.2}

Every command and API verb builds one of these and hands it to the runner (compress.runner).
Loading is strict: a YAML syntax error, an unknown key, pass kind, export format or setting, or a
pass order that cannot work (pruning after quantization) is refused before any work starts, with
the file and line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.calibration import Calibration
from compress.config import PassConfig, Settings, suggest
from compress.errors import BadInput
from compress.eval.generation import GenerationSettings
from compress.eval.generation_report import is_generation_path
from compress.eval.latency import LatencySettings
from compress.eval.tasks import TaskOptions
from compress.exporters import ExportConfig, export_config_from_dict
from compress.gate import Rule
from compress.registry import available_passes, broken_passes, config_from_dict
from compress.usermodule import ModelSpec
from compress.yamlfile import Located, load_yaml, load_yaml_file

RECIPE_VERSION = 1
TOP_KEYS = ("version", "name", "description", "model", "passes", "calibration", "export", "evaluate", "gate")

# (earlier kind, later kind, why): a pass of the later kind may not come after one of the earlier.
ORDER_RULES: tuple[tuple[str, str, str], ...] = (
    (
        "quantize",
        "prune",
        "pruning after quantization would prune rounded codes; prune the float model first",
    ),
    ("quantize", "distill", "distillation trains float weights; distill before quantizing"),
)


@dataclass(frozen=True, kw_only=True)
class Evaluation(Settings):
    """How the candidate is compared with its input; the arguments of compress.evaluate.

    task: auto, classification, embedding, causal-lm or fidelity. data: labelled data or text for the
    task. limit: at most this many rows per split. devices, runtimes: where latency is timed.
    task_options: text length, columns, causal-lm window and stride.
    generation: time to first token, decode speed and greedy agreement of causal LMs
    (compress.eval.generation.GenerationSettings; on by default for them).
    """

    task: str = "auto"
    data: str | None = None
    limit: int | None = None
    runtimes: tuple[str, ...] = ("torch",)
    devices: tuple[str, ...] = ("cpu", "cuda")
    latency: LatencySettings = field(default_factory=LatencySettings)
    task_options: TaskOptions = field(default_factory=TaskOptions)
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise BadInput(f"evaluate.limit: {self.limit} must be at least 1 (or left out: every row).")

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments for compress.evaluate."""
        return {
            "task": self.task,
            "data": self.data,
            "limit": self.limit,
            "runtimes": self.runtimes,
            "devices": self.devices,
            "latency": self.latency,
            "task_options": self.task_options,
            "generation": self.generation,
        }

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for section in ("latency", "task_options", "generation"):
            out[section].pop("kind", None)
        return out


@dataclass
class Recipe:
    """Ordered passes with their calibration, evaluation and gate rules; a YAML file for `compress run`.

    Example:
        >>> import compress as cz
        >>> r = cz.Recipe.load("recipes/int8-weight-only.yaml")                          # doctest: +SKIP
        >>> r = cz.Recipe.of([cz.Prune(pattern="neurons", sparsity=0.3), cz.Quantize()])  # doctest: +SKIP
        >>> print(r.to_yaml())                                                          # doctest: +SKIP
    """

    passes: list[PassConfig] = field(default_factory=list)
    evaluation: Evaluation = field(default_factory=Evaluation)
    calibration: Calibration | None = None  # None: the defaults, for the passes that need data
    export: list[ExportConfig] = field(default_factory=list)
    gate: list[Rule] = field(default_factory=list)
    name: str = ""
    description: str = ""
    version: int = RECIPE_VERSION
    model: ModelSpec | None = None  # the class a checkpoint without config.json is loaded into

    @classmethod
    def of(cls, steps: Recipe | PassConfig | Iterable[PassConfig | dict[str, Any]]) -> Recipe:
        """Accept a Recipe, one pass's settings, or a list of settings or dicts."""
        if isinstance(steps, Recipe):
            return steps
        if isinstance(steps, PassConfig):
            return cls(passes=[steps])
        passes = []
        for i, step in enumerate(steps):
            if isinstance(step, PassConfig):
                passes.append(step)
            elif isinstance(step, dict):
                passes.append(config_from_dict(step, f"passes[{i}]"))
            else:
                raise BadInput(f"passes[{i}]: expected pass settings, got {type(step).__name__}.")
        return cls(passes=passes)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read and validate a recipe file; its name defaults to the file's stem."""
        located = load_yaml_file(path)
        return _parse(located, default_name=Path(path).stem)

    @classmethod
    def loads(cls, text: str, source: str = "<recipe>") -> Recipe:
        return _parse(load_yaml(text, source), default_name="")

    def to_list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.passes]

    def uses_data(self) -> bool:
        return any(p.uses_data() for p in self.passes)

    @property
    def calibration_settings(self) -> Calibration:
        """The recipe's calibration, or the defaults when it sets none."""
        return self.calibration or Calibration()

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some sections replaced (passes, calibration, export, evaluation, gate, name)."""
        import dataclasses

        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: every setting spelled out, defaults included."""
        out: dict[str, Any] = {"version": self.version, "name": self.name}
        if self.description:
            out["description"] = self.description
        if self.model is not None:
            out["model"] = self.model.to_dict()
        out["passes"] = self.to_list()
        if self.calibration is not None or self.uses_data():
            out["calibration"] = self.calibration_settings.to_dict()
        if self.export:
            out["export"] = [e.to_dict() for e in self.export]
        out["evaluate"] = self.evaluation.to_dict()
        out["gate"] = [r.to_dict() for r in self.gate]
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def check_order(self, located: Located | None = None) -> None:
        """Refuse pass orders that cannot work (see ORDER_RULES), before any pass runs."""
        rules = {(a, b): why for a, b, why in ORDER_RULES}
        for i, later in enumerate(self.passes):
            for j, earlier in enumerate(self.passes[:i]):
                why = rules.get((earlier.kind, later.kind))
                if why is None:
                    continue
                message = f"passes[{i}] ({later.kind}) comes after passes[{j}] ({earlier.kind}): {why}."
                raise located.error(f"passes[{i}]", message) if located else BadInput(message)


def _parse(loc: Located, default_name: str) -> Recipe:
    data = loc.data
    if not isinstance(data, dict):
        raise loc.error("", "a recipe is a YAML mapping with at least 'passes' (a list of passes).")
    for key in data:
        if key not in TOP_KEYS:
            raise loc.error(
                str(key),
                f"unknown key '{key}'{suggest(str(key), list(TOP_KEYS))}; valid keys: {', '.join(TOP_KEYS)}.",
            )
    version = data.get("version", RECIPE_VERSION)
    if version != RECIPE_VERSION:
        raise loc.error(
            "version", f"recipe version {version!r}; this compress reads version {RECIPE_VERSION}."
        )
    for key in ("name", "description"):
        if not isinstance(data.get(key, ""), str):
            raise loc.error(key, f"'{key}' must be text.")
    recipe = Recipe(
        passes=_passes(loc, data.get("passes")),
        evaluation=_section(loc, Evaluation, data, "evaluate"),
        calibration=_section(loc, Calibration, data, "calibration") if "calibration" in data else None,
        export=_exports(loc, data.get("export")),
        gate=_rules(loc, data.get("gate")),
        name=data.get("name") or default_name,
        description=data.get("description") or "",
        model=_section(loc, ModelSpec, data, "model") if "model" in data else None,
    )
    recipe.check_order(loc)
    _check_latency_rules(loc, recipe)
    return recipe


def _check_latency_rules(loc: Located, recipe: Recipe) -> None:
    """A latency rule needs its device (and runtime) in the evaluation, or the report cannot have it."""
    e = recipe.evaluation
    for i, rule in enumerate(recipe.gate):
        parts = rule.metric.split(".")
        if parts[0] not in ("latency", "generation") or len(parts) < 3:
            continue
        if is_generation_path(rule.metric) and e.generation.enabled is False:
            raise loc.error(
                f"gate[{i}]",
                f"gate[{i}]: a rule on '{rule.metric}' needs generation metrics, and evaluate.generation "
                "has enabled: false.",
            )
        if parts[1] not in e.devices:
            raise loc.error(
                f"gate[{i}]",
                f"gate[{i}]: a rule on '{rule.metric}' needs device '{parts[1]}' in evaluate.devices "
                f"(now {', '.join(e.devices)}).",
            )
        if len(parts) in (4, 5) and parts[2] not in e.runtimes:
            raise loc.error(
                f"gate[{i}]",
                f"gate[{i}]: a rule on '{rule.metric}' needs runtime '{parts[2]}' in evaluate.runtimes "
                f"(now {', '.join(e.runtimes)}).",
            )


def _passes(loc: Located, items: Any) -> list[PassConfig]:
    if not isinstance(items, list) or not items:
        raise loc.error("passes", "'passes' must be a non-empty list of passes such as {kind: quantize}.")
    kinds = sorted(available_passes())
    passes = []
    for i, item in enumerate(items):
        where = f"passes[{i}]"
        if not isinstance(item, dict):
            raise loc.error(where, f"{where}: a pass is a mapping with a 'kind' (one of {', '.join(kinds)}).")
        if "kind" not in item:
            raise loc.error(where, f"{where}: missing 'kind'; installed passes: {', '.join(kinds)}.")
        kind = str(item["kind"])
        if kind not in kinds and kind not in broken_passes():
            raise loc.error(
                f"{where}.kind",
                f"{where}: unknown pass kind '{kind}'{suggest(kind, kinds)}; installed passes: "
                f"{', '.join(kinds)}.",
            )
        try:
            passes.append(config_from_dict(item, where))
        except BadInput as exc:
            raise loc.relocate(exc, where) from None
    return passes


def _exports(loc: Located, items: Any) -> list[ExportConfig]:
    if items is None:
        return []
    if isinstance(items, dict | str):
        items = [items]
    if not isinstance(items, list):
        raise loc.error("export", "'export' must be a list of export steps such as {format: onnx}.")
    steps = []
    for i, item in enumerate(items):
        try:
            steps.append(export_config_from_dict(item, f"export[{i}]"))
        except BadInput as exc:
            raise loc.relocate(exc, f"export[{i}]") from None
    formats = [s.format for s in steps]
    if len(set(formats)) != len(formats):
        raise loc.error("export", f"'export' names a format twice ({', '.join(formats)}).")
    return steps


def _section(loc: Located, cls: type[Settings], data: dict, key: str):
    value = data.get(key)
    return cls() if value is None else located_settings(loc, cls, value, key)


def located_settings(loc: Located, cls: type[Settings], value: Any, path: str) -> Any:
    """`cls` from the mapping `value` found at `path` of a YAML file; a bad one's sentence names its line."""
    if not isinstance(value, dict):
        raise loc.error(path, f"'{path}' must be a mapping of settings.")
    try:
        return cls.from_dict(value, path)
    except BadInput as exc:
        raise loc.relocate(exc, path) from None


def _rules(loc: Located, items: Any) -> list[Rule]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise loc.error("gate", "'gate' must be a list of rules such as {metric: size.ratio, max: 0.3}.")
    from compress.gate import check_bounds

    rules = []
    for i, item in enumerate(items):
        try:
            rules.append(Rule.parse(item, f"gate[{i}]"))
        except BadInput as exc:
            raise loc.relocate(exc, f"gate[{i}]") from None
    try:
        check_bounds(rules)
    except BadInput as exc:
        raise loc.error("gate", str(exc)) from None
    return rules
