"""From a point of the search space to the recipe it stands for, and from a recipe back to its point.

A point is a dict of parameter values, named as the search library sees them: "prune" (a variant's
name or "off"), "prune.neurons.sparsity", "quantize", "quantize.int4.group_size",
"quantize.embeddings", "quantize.int4.layers" (how many of the most sensitive layers stay at higher
precision). `recipe_of` asks a trial for each value (Optuna's `suggest_*`, or `Fixed` for a point
given), so the recipes a search runs and the ones it is seeded with are built by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compress.config import PassConfig
from compress.errors import BadInput
from compress.gate import Rule
from compress.recipe import Evaluation, Recipe
from compress.search.space import OFF, STEPS, SearchSpace, Step
from compress.search.variants import Choice, Range, Variant, build


@dataclass(frozen=True)
class Context:
    """What a trial's recipe takes besides the point: the teacher of a distillation step (the model
    searched), the Linear layers ranked by sensitivity (most sensitive first), and the evaluation,
    gate and export steps every trial gets."""

    teacher: str
    evaluation: Evaluation
    gate: tuple[Rule, ...] = ()
    sensitive: tuple[str, ...] = ()
    export: tuple[Any, ...] = ()  # compress.exporters.ExportConfig


class Fixed:
    """A trial whose values are given (as optuna.trial.FixedTrial), to build the recipe of a point."""

    def __init__(self, params: dict[str, Any]):
        self.params = dict(params)

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self._get(name)

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return self._get(name)

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return self._get(name)

    def _get(self, name: str) -> Any:
        if name not in self.params:
            raise BadInput(f"the point gives no value for '{name}'.")
        return self.params[name]


def recipe_of(space: SearchSpace, trial: Any, ctx: Context, name: str = "") -> Recipe:
    """The recipe of the point `trial` gives (BadInput when the passes refuse the combination)."""
    passes: list[PassConfig] = []
    pruned = _choose(space, trial, "prune")
    if pruned:
        passes.append(build("prune", pruned[1], f"prune ({pruned[0]})"))
        distilled = _choose(space, trial, "distill")
        if distilled:
            passes.append(
                build("distill", {**distilled[1], "teacher": ctx.teacher}, f"distill ({distilled[0]})")
            )
    quantized = _choose(space, trial, "quantize")
    if quantized:
        passes += _quantize(space.steps["quantize"], trial, quantized, ctx)
    if not passes:
        raise BadInput("this point leaves every step out: there is nothing to compress.")
    recipe = Recipe(
        passes=passes,
        evaluation=ctx.evaluation,
        calibration=space.calibration,
        export=exportable(passes, ctx.export),
        gate=list(ctx.gate),
        name=name,
    )
    recipe.check_order()
    return recipe


def exportable(passes: list[PassConfig], steps: tuple[Any, ...]) -> list[Any]:
    """The export steps whose format takes these passes. A trial its format refuses (weight-only INT8
    for ONNX) is timed on the evaluator's own export, as `compress run` of its passes alone would be."""
    from compress.exporters import get_exporter

    kept = []
    for step in steps:
        spec = get_exporter(step.format)
        try:
            if spec.check is not None:
                spec.check(list(passes), step)
        except BadInput:
            continue
        kept.append(step)
    return kept


def _choose(space: SearchSpace, trial: Any, kind: str) -> tuple[str, dict[str, Any]] | None:
    step = space.steps.get(kind)
    if step is None:
        return None
    chosen = _pick(trial, kind, step.names())
    if chosen == OFF:
        return None
    variant = step.variants[chosen]
    settings = {
        key: value.suggest(trial, f"{kind}.{chosen}.{key}") if isinstance(value, Choice | Range) else value
        for key, value in variant.settings.items()
    }
    return chosen, settings


def _pick(trial: Any, name: str, values: tuple[Any, ...] | list[Any]) -> Any:
    values = list(values)
    return trial.suggest_categorical(name, values) if len(values) > 1 else values[0]


def _quantize(step: Step, trial: Any, chosen: tuple[str, dict], ctx: Context) -> list[PassConfig]:
    from compress.passes.quantize.config import Int4Config, Int8Config

    name, settings = chosen
    cfg = build("quantize", settings, f"quantize ({name})")
    embeddings = _pick(trial, "quantize.embeddings", step.embeddings)
    targets = cfg.targets
    tables = "embedding" in targets.types
    if embeddings == "same":  # the tables at the pass's own scheme
        targets = targets.replace(types=tuple(dict.fromkeys((*targets.types, "embedding"))))
        if isinstance(cfg, Int4Config):
            cfg = cfg.replace(embeddings="int4")
    elif tables:  # float, or int8 in a pass of their own (below)
        targets = targets.replace(types=tuple(t for t in targets.types if t != "embedding"))
    mixed = step.mixed_precision
    if mixed is not None and isinstance(cfg, Int4Config | Int8Config):
        count = _pick(trial, f"quantize.{name}.layers", mixed.layers)
        if count and not ctx.sensitive:
            raise BadInput(
                "mixed precision needs the model's layers ranked by sensitivity; none were measured."
            )
        kept = tuple(ctx.sensitive[:count])
        if kept and isinstance(cfg, Int4Config):
            cfg = cfg.replace(keep_int8=kept)
        elif kept:
            targets = targets.replace(exclude=(*targets.exclude, *kept))
    passes = [cfg.replace(targets=targets)]
    if embeddings == "int8":
        passes.append(build("quantize", {"scheme": "int8", "targets": {"types": ["embedding"]}}, "quantize"))
    return passes


# ---- from a recipe back to its point ------------------------------------------------------------
def point_of(space: SearchSpace, recipe: Recipe, ctx: Context) -> dict[str, Any]:
    """The point whose recipe has the same passes as `recipe` (each with the calibration it would
    really draw); BadInput saying why when the recipe is not a point of the space."""
    slots = _slots(recipe)
    wanted = effective(recipe)
    points: list[dict[str, Any]] = [{}]
    for kind in STEPS:
        if kind == "distill" and not slots["prune"]:  # the search asks for distillation after pruning only
            options = [{}] if not slots[kind] else []
        else:
            options = _step_options(space, kind, slots[kind])
        points = [{**p, **o} for p in points for o in options]
    for point in points:
        try:
            built = recipe_of(space, Fixed(point), ctx)
        except BadInput:
            continue
        if effective(built) == wanted:
            return point
    raise BadInput(f"recipe '{recipe.name}' is not a point of the search space ({_why(space, slots)}).")


def recipe_key(recipe: Recipe) -> str:
    """What makes two trials the same measurement: their passes as the runner resolves them and their
    exports (two points of the space can build the same recipe; the sampler can ask for one twice)."""
    import hashlib
    import json

    steps = [effective(recipe), [step.to_dict() for step in recipe.export]]
    return hashlib.sha256(json.dumps(steps, sort_keys=True, default=str).encode()).hexdigest()[:16]


def effective(recipe: Recipe) -> list[dict[str, Any]]:
    """Each pass's settings as the runner resolves them (the calibration it draws filled in)."""
    from compress.plan import _step as resolve

    return [resolve(i, cfg, recipe, None).config.to_dict() for i, cfg in enumerate(recipe.passes)]


def _slots(recipe: Recipe) -> dict[str, list[PassConfig]]:
    slots: dict[str, list[PassConfig]] = {kind: [] for kind in STEPS}
    for cfg in recipe.passes:
        if cfg.kind not in slots:
            raise BadInput(f"recipe '{recipe.name}' has a {cfg.kind} pass, which the search does not make.")
        slots[cfg.kind].append(cfg)
    return slots


def _step_options(space: SearchSpace, kind: str, cfgs: list[PassConfig]) -> list[dict]:
    """The values of one step's parameters that could give these passes (none: the step is off)."""
    step = space.steps.get(kind)
    if step is None:
        return [{}] if not cfgs else []
    if not cfgs:
        return [{kind: OFF}] if step.optional else []
    if kind != "quantize" and len(cfgs) > 1:
        return []
    options = []
    for name, variant in step.variants.items():
        values = _values(kind, name, variant, cfgs[0].to_dict())
        if values is None:
            continue
        values = {kind: name, **values} if len(step.names()) > 1 else values
        if kind == "quantize":
            options += _quantize_options(step, name, values, cfgs)
        else:
            options.append(values)
    return options


def _values(kind: str, name: str, variant: Variant, settings: dict[str, Any]) -> dict[str, Any] | None:
    out = {}
    for key, dist in variant.searched.items():
        value = settings.get(key)
        if not dist.contains(value):
            return None
        if isinstance(dist, Choice):  # the choice's own value (0.5 for 0.5, never True for 1)
            value = next(v for v in dist.values if Choice((v,)).contains(value))
        out[f"{kind}.{name}.{key}"] = value
    return out


def _quantize_options(step: Step, name: str, values: dict, cfgs: list[PassConfig]) -> list[dict]:
    first = cfgs[0]
    embeddings = "int8" if len(cfgs) == 2 else ("same" if "embedding" in first.targets.types else "float")
    if embeddings not in step.embeddings or len(cfgs) > 2:
        return []
    if len(step.embeddings) > 1:
        values = {**values, "quantize.embeddings": embeddings}
    mixed = step.mixed_precision
    if mixed is not None and len(mixed.layers) > 1:
        if 0 not in mixed.layers:
            return []
        values = {**values, f"quantize.{name}.layers": 0}
    return [values]


def _why(space: SearchSpace, slots: dict[str, list[PassConfig]]) -> str:
    reasons = []
    for kind in STEPS:
        step, cfgs = space.steps.get(kind), slots[kind]
        if step is None and cfgs:
            reasons.append(f"it has a {kind} pass and the space no {kind} step")
        elif step is not None and not cfgs and not step.optional:
            reasons.append(f"it has no {kind} pass and the space's {kind} step is not optional")
        elif step is not None and cfgs:
            described = "; ".join(getattr(c, "describe", lambda c=c: c.kind)() for c in cfgs)
            reasons.append(f"no {kind} variant gives {described}")
    return ", ".join(reasons) or "its settings differ from every variant's"
