"""Planning a run: a recipe resolved and checked against its input before any pass runs.

For each pass the plan fixes its effective settings (the calibration it will draw: the pass's own,
else the recipe's), the road it takes, and its cache address:

- "stream": a data-free pass that works one weight at a time reads the checkpoint file tensor by
  tensor and writes its result as it goes (compress.streaming), without building the model;
- "external": another tool does the work on the float checkpoint (NNCF; compress.backends);
- "memory": the pass runs on the model in memory (read block by block when the pass can).

The road changes how the result is made, never what it is: every road hands the one writer the same
record. Cache addresses chain: step i's key hashes step i-1's key with pass i's effective settings,
so a recipe of n passes is keyed in O(n), and changing any setting, the calibration, the input or
the compress version re-runs that pass and every one after it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from compress._version import __version__
from compress.calibration import Calibration, CalibrationData, check_source, from_memory
from compress.config import PassConfig
from compress.errors import BadInput
from compress.recipe import Recipe
from compress.registry import get_pass
from compress.targets import Targets

CACHE_ENV = "COMPRESS_CACHE"
DEFAULT_CACHE = Path(".compress") / "cache"
STEP_FILE = "step.json"  # written last into a cache entry: an entry without it is not used


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


@dataclass
class Step:
    index: int
    config: PassConfig  # the effective settings (calibration resolved when the pass takes data)
    road: str  # "stream" | "external" | "memory"
    takes_data: bool
    key: str = ""
    folder: Path | None = None  # its cache entry; None when nothing is cached

    @property
    def cached(self) -> bool:
        return self.folder is not None and (self.folder / STEP_FILE).is_file()


@dataclass
class Plan:
    """What `compress.runner.run` will do, resolved and checked before any pass runs."""

    recipe: Recipe  # its passes are the steps' effective settings
    source: Path | None  # the input checkpoint; None for a model given in memory
    model: Any | None  # compress.model.Model given in memory (copied before a pass changes it)
    source_sha256: str
    output: Path | None
    steps: list[Step]
    data: CalibrationData | None = None  # samples given in memory: every pass that takes data uses them
    notes: list[str] = field(default_factory=list)

    def load_model(self, path: Path, progress=None) -> Any:
        """A checkpoint of this run as a Model: built as the recipe's `model` section says (--module),
        else as compress.load builds it (its config.json's architecture, or tensors only)."""
        from compress.model import load

        if self.recipe.model is not None:
            return self.recipe.model.load(path, progress=progress)
        return load(path, progress=progress)

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(#, pass, settings, data, cache) for a table."""
        out = []
        for s in self.steps:
            describe = getattr(s.config, "describe", None)
            settings = describe() if callable(describe) else _short(s.config)
            data = "yes" if s.takes_data else "no"
            cache = "off" if s.folder is None else ("reused" if s.cached else "to run")
            out.append(
                (str(s.index), s.config.kind, f"{settings} [{s.road}]", data, f"{cache} ({s.key[:12]})")
            )
        return out


def plan_run(
    recipe: Recipe | str | Path,
    source: Any,
    output: str | Path | None = None,
    *,
    data: Any = None,
    cache: Any = "default",
) -> Plan:
    """Resolve and check everything a run needs: recipe, pass order, targets, data, export steps,
    the input's hash, each pass's road and cache entry.

    `source`: a checkpoint path, a compress Model or a torch.nn.Module. `data`: calibration data that
    replaces the recipe's: a path or built-in name, or samples in memory (a tensor, a list of
    samples, CalibrationData). `cache`: a folder, "default" (COMPRESS_CACHE or .compress/cache) or
    None; only a checkpoint file with no samples in memory is cached.
    """
    from compress.checkpoint import sha256_file
    from compress.writer import check_output_folder

    recipe = recipe if isinstance(recipe, Recipe) else Recipe.load(recipe)
    recipe.check_order()
    if not recipe.passes:
        raise BadInput("the recipe has no passes.")
    weights, model, recipe = _source(source, recipe)
    recipe, notes = _resolve(recipe, weights, model)
    samples = None
    if isinstance(data, str | Path):
        recipe = _with_data(recipe, str(data))
    elif data is not None:
        samples = from_memory(data)
    steps = [_step(i, cfg, recipe, samples) for i, cfg in enumerate(recipe.passes)]
    recipe = recipe.replace(passes=[s.config for s in steps])
    _check(recipe, steps, weights, samples, model.family if model is not None else _family(weights))
    out = Path(output) if output is not None else None
    if out is not None:
        check_output_folder(out, weights)
    digest = sha256_file(weights) if weights is not None else _model_digest(model)
    root = _cache_root(cache) if weights is not None and samples is None else None
    key = _input_key(digest, recipe)
    for step in steps:
        key = step_key(key, step.config, _data_digest(step, recipe) if root else None)
        step.key = key
        step.folder = root / key if root else None
    _choose_roads(steps, out, recipe.model, from_file=weights is not None)
    return Plan(recipe, weights, model, digest, out, steps, samples, notes)


def _with_data(recipe: Recipe, data: str) -> Recipe:
    """Data named for the run replaces the recipe's calibration data and every pass's own."""
    passes = [
        cfg.replace(calibration=cfg.calibration.replace(data=data))
        if isinstance(getattr(cfg, "calibration", None), Calibration)
        else cfg
        for cfg in recipe.passes
    ]
    return recipe.replace(passes=passes, calibration=recipe.calibration_settings.replace(data=data))


def step_key(previous: str, cfg: PassConfig, data_sha256: str | None = None) -> str:
    """The content address of a pass's result: the previous result's address, this pass's effective
    settings and the content of the calibration file it reads, with the compress and format versions."""
    from compress.formats import FORMAT_VERSION
    from compress.history import canonical_sha256

    return canonical_sha256(
        {
            "previous": previous,
            "pass": cfg.to_dict(),
            "data": data_sha256,
            "compress": __version__,
            "format": FORMAT_VERSION,
        }
    )


def _data_digest(step: Step, recipe: Recipe) -> str | None:
    """The sha256 of the calibration file a pass reads (a built-in text changes only with compress)."""
    from compress.checkpoint import sha256_file

    if not step.takes_data:
        return None
    settings = getattr(step.config, "calibration", None) or recipe.calibration_settings
    path = Path(settings.data)
    return sha256_file(path) if path.is_file() else None


def default_output_dir(source: str | Path, label: str) -> Path:
    """`<input folder>-<label>` beside the input folder."""
    from compress.model import resolve_checkpoint

    weights = resolve_checkpoint(source)
    folder = weights.parent.resolve()
    return folder.parent / f"{folder.name}-{label}"


def _source(source: Any, recipe: Recipe) -> tuple[Path | None, Any, Recipe]:
    """(checkpoint file, None) for a path; (None, Model) for a model in memory; with the recipe,
    whose `model` section says how a model in memory was built from its checkpoint (--module)."""
    from compress.model import Model, load, resolve_checkpoint

    if isinstance(source, str | os.PathLike):
        return resolve_checkpoint(source), None, recipe
    model = load(source)  # a torch.nn.Module becomes a Model; a Model is taken as it is
    if not isinstance(model, Model) or not model.runnable:
        raise BadInput("the model given has no architecture to run passes on.")
    if recipe.model is not None and recipe.model != model.spec:
        raise BadInput(
            f"the recipe builds its model as {recipe.model.describe()}, but the model given in memory "
            f"was {'built otherwise' if model.spec is None else 'built as ' + model.spec.describe()}; "
            "give the checkpoint's path, or a model built as the recipe says."
        )
    return None, model, recipe.replace(model=model.spec)


def _resolve(recipe: Recipe, weights: Path | None, model: Any) -> tuple[Recipe, list[str]]:
    """Each pass's settings made concrete for this CPU and the input's model family (PassConfig.resolve,
    the one place it is called: INT8's weight bits, INT4's method auto), with a note for each setting
    that changed."""
    if model is not None:
        family = model.family
    elif recipe.model is not None:
        family = "module"
    else:
        from compress.model import family_of, load_config

        config = load_config(weights.parent) if weights is not None else None
        family = family_of(config) if config is not None else "tensors"
    passes, notes = [], []
    for i, cfg in enumerate(recipe.passes):
        resolved = cfg.resolve(family, recipe.calibration_settings)
        before, after = cfg.to_dict(), resolved.to_dict()
        changed = [f"{k} {before[k]} -> {after[k]}" for k in after if k in before and before[k] != after[k]]
        if changed:
            notes.append(f"passes[{i}] ({cfg.kind}) for this {family} model and CPU: {', '.join(changed)}.")
        passes.append(resolved)
    return recipe.replace(passes=passes), notes


def _input_key(digest: str, recipe: Recipe) -> str:
    """The start of the step keys: the input's hash, and the class it is loaded into (with the hash
    of the file that defines it) when the recipe names one."""
    if recipe.model is None:
        return digest
    from compress.history import canonical_sha256

    spec = recipe.model
    return canonical_sha256({"input": digest, "model": spec.to_dict(), "code": spec.code_sha256()})


def _step(index: int, cfg: PassConfig, recipe: Recipe, samples: CalibrationData | None) -> Step:
    """A pass's effective settings (already resolved by _resolve): the calibration it draws filled in
    when it takes data."""
    own = getattr(cfg, "calibration", None)
    takes = cfg.uses_data() or (
        cfg.accepts_data() and (recipe.calibration is not None or samples is not None or own is not None)
    )
    if takes and samples is None and hasattr(cfg, "calibration"):
        cfg = cfg.replace(calibration=Calibration.resolve(recipe.calibration_settings, cfg))
    return Step(index, cfg, "memory", takes)


def _family(weights: Path | None) -> str | None:
    """The model family ('causal-lm', 'encoder', ...) that the config beside `weights` names, if any."""
    import json

    from compress.model import family_of

    config = weights.parent / "config.json" if weights is not None else None
    if config is None or not config.is_file():
        return None
    try:
        raw = json.loads(config.read_text())
    except (OSError, ValueError):
        return None  # loading the model reports a broken config
    return (
        family_of(SimpleNamespace(architectures=raw.get("architectures"))) if isinstance(raw, dict) else None
    )


def _check(
    recipe: Recipe,
    steps: list[Step],
    weights: Path | None,
    samples: CalibrationData | None,
    family: str | None = None,
) -> None:
    """Targets that match nothing, missing data files, export steps a format cannot hold: now."""
    from compress.checkpoint import SafetensorsFile
    from compress.eval.data import BUILTIN, BUILTIN_TEXT
    from compress.exporters import check_exports
    from compress.layers import select_checkpoint_tensors

    if weights is not None:
        skeleton = _check_model(recipe, weights)
        file = SafetensorsFile(weights)
        quantized: dict[str, int] = {}
        for i, cfg in enumerate(recipe.passes):  # a target that matches nothing fails now, not after hours
            targets = getattr(cfg, "targets", None)
            if not isinstance(targets, Targets):
                continue
            selected = select_checkpoint_tensors(file, targets, f"passes[{i}] ({cfg.kind})", skeleton)
            if cfg.kind == "quantize":
                _check_quantized_once(i, selected, quantized)
    for step in steps:
        if step.takes_data and samples is None:
            check_source(getattr(step.config, "calibration", None) or recipe.calibration_settings)
    name = recipe.evaluation.data
    if name and name not in BUILTIN and name not in BUILTIN_TEXT and not Path(name).is_file():
        known = ", ".join([*BUILTIN, *BUILTIN_TEXT])
        raise BadInput(f"evaluate.data: {name}: no such file (built-in data sets: {known}).")
    check_exports(list(recipe.export), list(recipe.passes), family)


def _check_model(recipe: Recipe, weights: Path) -> Any | None:
    """The module the recipe's `model` section builds, checked against the checkpoint (names and
    shapes); None without one. A checkpoint that cannot run (no config.json, no model section) is
    refused when the evaluation asks for a task or data that only a running model can give."""
    from compress.model import load_config

    if recipe.model is not None:
        return recipe.model.check_fits(weights)
    e = recipe.evaluation
    asked = ([f"task '{e.task}'"] if e.task != "auto" else []) + ([f"data '{e.data}'"] if e.data else [])
    if asked and load_config(weights.parent) is None:
        raise BadInput(
            f"{weights}: has no config.json beside it and no class to load it into, so it cannot run and "
            f"the evaluation's {' and '.join(asked)} cannot apply; name its class with --module "
            "FILE.py:ClassName (a recipe's model section), or leave them out."
        )
    return None


def _check_quantized_once(index: int, selected: dict, quantized: dict[str, int]) -> None:
    """Two quantize passes may split a model's layers (INT4 Linear, INT8 embeddings), not share one."""
    for name in selected:
        if name in quantized:
            raise BadInput(
                f"passes[{index}] (quantize) targets '{name}', which passes[{quantized[name]}] already "
                "quantizes; give the two passes disjoint targets (include/exclude)."
            )
        quantized[name] = index


def _choose_roads(steps: list[Step], output: Path | None, model: Any = None, from_file: bool = True) -> None:
    """Stream or hand over the first pass of a checkpoint where it can write its result to a folder.
    A checkpoint loaded into the user's class (`model`) runs in memory: the class says which weights
    are Linear layers, which the file alone cannot; so does a model given in memory (no file)."""
    first = steps[0]
    spec = get_pass(first.config.kind)
    has_folder = from_file and (first.folder is not None or (len(steps) == 1 and output is not None))
    if getattr(first.config, "backend", "compress") != "compress":
        if model is not None:
            raise BadInput(
                f"{first.config.kind}.backend {first.config.backend}: works on a transformers checkpoint "
                "(config.json), not on a model built from your own class; use backend compress."
            )
        if len(steps) > 1:
            raise BadInput(
                f"{first.config.kind}.backend {first.config.backend}: runs as a recipe's only pass (it "
                "writes an ONNX graph from the float checkpoint); split the recipe or use backend compress."
            )
        first.road = "external" if from_file else "memory"  # in memory, the pass says it needs a file
    elif (
        model is None
        and spec.stream is not None
        and spec.stream.can_stream(first.config)
        and not first.takes_data
        and has_folder
    ):
        first.road = "stream"
    for step in steps[1:]:
        if getattr(step.config, "backend", "compress") != "compress":
            raise BadInput(
                f"passes[{step.index}] ({step.config.kind}): backend {step.config.backend} runs only as a "
                "recipe's single pass, on the float checkpoint."
            )


def _cache_root(cache: Any) -> Path | None:
    if cache is None or cache is False:
        return None
    return default_cache_dir() if cache == "default" else Path(cache)


def _model_digest(model: Any) -> str:
    """The sha256 of the checkpoint a model in memory was loaded from ('' for one built in code)."""
    from compress.checkpoint import sha256_file

    checkpoint = getattr(model, "checkpoint", None)
    return sha256_file(checkpoint) if checkpoint is not None and checkpoint.suffix == ".safetensors" else ""


def _short(cfg: PassConfig) -> str:
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("kind", "targets")}
    return ", ".join(f"{k}={v}" for k, v in settings.items())
