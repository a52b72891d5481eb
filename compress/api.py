"""The verbs of the public API. Each builds a Recipe and calls the one runner (compress.runner.run),
exactly as the command of the same name does, so Python and the CLI give the same result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.artifact import Artifact
from compress.calibration import Calibration
from compress.recipe import Recipe


def apply(
    model: Any,
    recipe: Any,
    *,
    data: Any = None,
    device: str = "cpu",
    progress=None,
) -> Artifact:
    """Apply a recipe (or one pass's settings, or a list of them) to a model; the result in memory.

    `model` is a path, a `Model` or a `torch.nn.Module`; a module you pass in is copied, not changed.
    `data` is calibration data for the passes that take it, replacing the recipe's: a path or a
    built-in name, a tensor, a list of samples, or `compress.calibration.CalibrationData`.
    `progress`: True for plain text progress (fine in a notebook), or a compress.progress.Progress.
    The recipe's export steps run when the Artifact is saved (`.save(dir)`).

    Example:
        >>> import compress as cz
        >>> art = cz.apply("model.safetensors", cz.Quantize(scheme="int4", group_size=32))  # doctest: +SKIP
        >>> art.save("out/int4")                                                           # doctest: +SKIP
    """
    from compress.runner import run

    return run(Recipe.of(recipe), model, data=data, device=device, progress=progress, evaluate=False).artifact


def compress_checkpoint(
    source: str | Path, recipe: Any, out_dir: str | Path, *, data: Any = None, progress=None
) -> Artifact:
    """Apply a recipe to a checkpoint and write the result into `out_dir`, without evaluating it
    (`run_recipe` with evaluate=False and no cache); a data-free pass streams tensor by tensor.

    Example:
        >>> import compress as cz
        >>> int8 = cz.Quantize(scheme="int8")
        >>> cz.compress_checkpoint("model.safetensors", int8, "out/int8")   # doctest: +SKIP
    """
    from compress.runner import run

    result = run(Recipe.of(recipe), source, out_dir, data=data, evaluate=False, progress=progress)
    return result.artifact


def run_recipe(
    recipe: Any,
    source: Any,
    output: str | Path | None = None,
    *,
    data: Any = None,
    cache: Any = "default",
    history: Any = "default",
    evaluate: bool = True,
    progress=None,
):
    """Run a recipe (a file, a Recipe, or pass settings) on a model as `compress run` does: passes
    (reusing cached steps), export steps, evaluation, gate, and a row in the history database.

    `cache`: a folder, "default" (COMPRESS_CACHE or .compress/cache) or None. `history`: a
    compress.History, "default" (COMPRESS_HISTORY or .compress/history.db) or None.
    Returns a RunResult: `.report`, `.verdict`, `.artifact`, `.output`, `.steps_run`, `.steps_reused`.

    Example:
        >>> import compress as cz
        >>> result = cz.run_recipe("recipes/int8-dynamic.yaml", "model.safetensors", "out/")  # doctest: +SKIP
        >>> result.verdict.passed, result.report.metric("size.ratio")                       # doctest: +SKIP
    """
    from compress.runner import run

    if not isinstance(recipe, str | Path):
        recipe = Recipe.of(recipe)
    return run(
        recipe, source, output, data=data, cache=cache, history=history, evaluate=evaluate, progress=progress
    )


def quantize(
    model: Any,
    scheme: str = "int8",
    *,
    method: str | None = None,
    embeddings: str | bool | None = None,
    include: tuple[str, ...] = ("*",),
    exclude: tuple[str, ...] = (),
    data: Any = None,
    calib: dict | None = None,
    export: Any = (),
    progress=None,
    **settings: Any,
) -> Artifact:
    """Quantize a model and return the Artifact (in memory; `.save(dir)` writes it).

    `model` is a path, a `Model` or a `torch.nn.Module` (copied, never changed in place).
    `scheme` int8, int4, bf16 or fp16; `method`: rtn, mse, hqq (no data), gptq, awq (calibration
    data), or None: the scheme's default (int8, bf16, fp16: rtn; int4: auto, which picks awq for a
    causal LM and rtn otherwise). `embeddings`: None quantizes embedding tables (INT4 keeps them at
    INT8; bf16/fp16 also round convolutions); "float" leaves them float; "int8"/"int4" sets their
    scheme. The other settings of the method's class pass through as keywords (group_size,
    symmetric, activations, smooth, bias_correction, weight_bits, keep_int8, damp, act_order, clip,
    backend: see `compress passes` for each with its default). `data` is calibration data (a path or
    built-in name such as "wiki-train", a tensor or a list of samples) and `calib` its amount
    ({"samples": 64, "seq_len": 512, "seed": 0}). `export`: formats written on save ("onnx", ...).

    Example:
        >>> import compress as cz
        >>> int8 = cz.quantize("model.safetensors", scheme="int8", embeddings="float")  # doctest: +SKIP
        >>> int8.save("out/int8")                                                     # doctest: +SKIP
        >>> int4 = cz.quantize("gemma", "int4", method="gptq", data="wiki-train",
        ...                    calib={"samples": 64, "seq_len": 512})                 # doctest: +SKIP
    """
    recipe = quantize_recipe(
        scheme, method=method, embeddings=embeddings, include=include, exclude=exclude, **settings
    )
    recipe = with_calibration(recipe, data, calib).replace(export=export_steps(export))
    return apply(model, recipe, data=None if _is_path(data) else data, progress=progress)


def quantize_recipe(
    scheme: str = "int8",
    *,
    method: str | None = None,
    embeddings: str | bool | None = None,
    include: tuple[str, ...] = ("*",),
    exclude: tuple[str, ...] = (),
    **settings: Any,
) -> Recipe:
    """A one-pass recipe from the keywords of `quantize` (and the options of `compress quantize`).

    `method` None: the scheme's default (int8: rtn; int4: auto). `embeddings`: None, the defaults
    (embedding tables quantized; INT4 stores them at INT8); "float" (or False) leaves them float;
    "int8" or "int4" is their scheme; True quantizes them at the pass's own scheme."""
    from compress.passes.quantize.config import QuantizeConfig, embedding_settings

    targets = {"include": list(include) or ["*"], "exclude": list(exclude)}
    given = {k: v for k, v in {**settings, "method": method}.items() if v is not None}
    given.update(embedding_settings(embeddings, scheme, given.get("backend", "compress")))
    targets.update(given.pop("targets", {}))
    cfg = QuantizeConfig.from_dict({"scheme": scheme, "targets": targets, **given})
    name = cfg.scheme if cfg.method in ("rtn", "auto") else f"{cfg.scheme}-{cfg.method}"
    return Recipe(passes=[cfg], name=name)


def prune(
    model: Any,
    pattern: str = "unstructured",
    sparsity: float | None = None,
    *,
    method: str = "magnitude",
    scope: str = "layer",
    round_to: int = 1,
    recalibrate: bool = True,
    embeddings: bool = False,
    include: tuple[str, ...] = ("*",),
    exclude: tuple[str, ...] = (),
    data: Any = None,
    calib: dict | None = None,
    progress=None,
) -> Artifact:
    """Prune a model and return the Artifact (in memory; `.save(dir)` writes it).

    pattern: "unstructured", an N:M such as "2:4", "neurons", "heads" or "channels".
    method: "magnitude"; "wanda" (unstructured, N:M) or "activation" (structured) use calibration
    data: `data` is a built-in text ("wiki-train", the default), a text file, an .npz of inputs,
    or ready inputs (tensors, CalibrationData); `calib` its amount ({"samples": 64, "seq_len": 256}).
    A model defined in code needs `data` for the structured patterns too: the dependency analysis
    traces it on a sample.

    Example:
        >>> import compress as cz
        >>> smaller = cz.prune("model.safetensors", "neurons", 0.3)                  # doctest: +SKIP
        >>> sparse = cz.prune("model.safetensors", "2:4", method="wanda")            # doctest: +SKIP
        >>> both = cz.apply("model.safetensors", [cz.Prune(pattern="neurons", sparsity=0.3),
        ...                                       cz.Quantize(scheme="int8")])        # doctest: +SKIP
    """
    recipe = prune_recipe(
        pattern,
        sparsity,
        method=method,
        scope=scope,
        round_to=round_to,
        recalibrate=recalibrate,
        embeddings=embeddings,
        include=include,
        exclude=exclude,
    )
    recipe = with_calibration(recipe, data, calib)
    return apply(model, recipe, data=None if _is_path(data) else data, progress=progress)


def prune_recipe(
    pattern: str,
    sparsity: float | None,
    *,
    method: str = "magnitude",
    scope: str = "layer",
    round_to: int = 1,
    recalibrate: bool = True,
    embeddings: bool = False,
    include: tuple[str, ...] = ("*",),
    exclude: tuple[str, ...] = (),
) -> Recipe:
    """A one-pass recipe from the keywords of `prune` (and the options of `compress prune`)."""
    from compress.passes.prune import PruneConfig

    types = ["linear", "conv", "embedding"] if embeddings else ["linear", "conv"]
    cfg = PruneConfig.from_dict(
        {
            "pattern": pattern,
            "sparsity": sparsity,
            "method": method,
            "scope": scope,
            "round_to": round_to,
            "recalibrate": recalibrate,
            "targets": {"types": types, "include": list(include) or ["*"], "exclude": list(exclude)},
        }
    )
    return Recipe(passes=[cfg], name="pruned")


def with_calibration(recipe: Recipe, data: Any, calib: dict | None) -> Recipe:
    """The recipe with its calibration set from `data` (a path or built-in name) and `calib`
    (samples, seq_len, seed); unchanged when neither says anything."""
    settings = dict(calib or {})
    if _is_path(data):
        settings["data"] = str(data)
    if not settings:
        return recipe
    return recipe.replace(calibration=Calibration.from_dict(settings, "calibration"))


def export_steps(export: Any) -> list:
    """Export steps from format names or settings dicts ("onnx", {"format": "onnx", ...})."""
    from compress.exporters import ExportConfig, export_config_from_dict

    items = [export] if isinstance(export, str | dict | ExportConfig) else list(export or ())
    return [e if isinstance(e, ExportConfig) else export_config_from_dict(e, "export") for e in items]


def _is_path(data: Any) -> bool:
    return isinstance(data, str | Path)
