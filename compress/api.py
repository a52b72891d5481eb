"""Convenience functions of the public API; each builds settings and calls `apply`."""

from __future__ import annotations

from typing import Any

from compress.artifact import Artifact
from compress.pipeline import apply


def quantize(
    model: Any,
    scheme: str = "int8",
    *,
    group_size: int = 128,
    symmetric: bool = True,
    method: str = "rtn",
    activations: str = "none",
    weight_bits: int | None = None,
    embeddings: bool = False,
    include: tuple[str, ...] = ("*",),
    exclude: tuple[str, ...] = (),
    keep_int8: tuple[str, ...] = (),
    data: Any = None,
    calib: dict | None = None,
    backend: str = "compress",
    progress=None,
    **method_settings: Any,
) -> Artifact:
    """Quantize a model's weights and return the Artifact (in memory; `.save(dir)` writes it).

    `model` is a path, a `Model` or a `torch.nn.Module` (copied, never changed in place).
    `method`: rtn, mse, hqq (no data) or gptq, awq (calibration data: `data` is a path, a built-in
    text such as "wiki-train", a tensor or a list of samples; `calib` sets samples, seq_len and seed).
    `keep_int8` keeps the layers it names at INT8 in an INT4 run; `exclude` keeps them in float.
    Method settings (damp, act_order, clip) and SmoothQuant's `smooth` (with `activations` dynamic
    or static, on `data`) pass through as keywords. `backend="nncf"` writes an
    ONNX graph, not a model in memory: use `quantize_config(..., backend="nncf")` with
    `cz.compress_checkpoint` (or `compress quantize --backend nncf`).

    Example:
        >>> import compress as cz
        >>> int8 = cz.quantize("model.safetensors", scheme="int8", embeddings=True)   # doctest: +SKIP
        >>> int8.save("out/int8")                                                     # doctest: +SKIP
        >>> cz.evaluate(int8, baseline="model.safetensors")                           # doctest: +SKIP
        >>> int4 = cz.quantize("gemma", "int4", method="gptq", data="wiki-train",
        ...                    calib={"samples": 64, "seq_len": 512})                 # doctest: +SKIP
    """
    cfg = quantize_config(
        scheme,
        group_size=group_size,
        symmetric=symmetric,
        method=method,
        activations=activations,
        weight_bits=weight_bits,
        embeddings=embeddings,
        include=include,
        exclude=exclude,
        keep_int8=keep_int8,
        calib=calib,
        backend=backend,
        **method_settings,
    )
    return apply(model, cfg, data=data, progress=progress)


def quantize_config(
    scheme: str = "int8",
    *,
    group_size: int = 128,
    symmetric: bool = True,
    method: str = "rtn",
    activations: str = "none",
    weight_bits: int | None = None,
    embeddings: bool = False,
    include: tuple[str, ...] = ("*",),
    exclude: tuple[str, ...] = (),
    keep_int8: tuple[str, ...] = (),
    calib: dict | None = None,
    backend: str = "compress",
    **method_settings: Any,
):
    """The quantize pass's settings from the keyword arguments of `quantize` (and `compress quantize`)."""
    from compress.passes.quantize import QuantizeConfig

    return QuantizeConfig.from_dict(
        {
            "scheme": scheme,
            "group_size": group_size,
            "symmetric": symmetric,
            "method": method,
            "activations": activations,
            "weight_bits": weight_bits,
            "targets": {
                "types": ["linear", "embedding"] if embeddings else ["linear"],
                "include": list(include),
                "exclude": list(exclude),
            },
            "keep_int8": list(keep_int8),
            **({"calib": calib} if calib else {}),
            **({"backend": backend} if backend != "compress" else {}),
            **method_settings,
        }
    )


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
    calib_samples: int = 64,
    calib_seq_len: int = 256,
    progress=None,
) -> Artifact:
    """Prune a model and return the Artifact (in memory; `.save(dir)` writes it).

    pattern: "unstructured", an N:M such as "2:4", "neurons", "heads" or "channels".
    method: "magnitude"; "wanda" (unstructured, N:M) or "activation" (structured) use calibration
    data: `data` is a built-in text ("wiki-train", the default), a text file, an .npz of inputs,
    or ready inputs (tensors, CalibrationData). A model defined in code needs `data` for the
    structured patterns too: the dependency analysis traces it on a sample.

    Example:
        >>> import compress as cz
        >>> smaller = cz.prune("model.safetensors", "neurons", 0.3)                  # doctest: +SKIP
        >>> sparse = cz.prune("model.safetensors", "2:4", method="wanda")            # doctest: +SKIP
        >>> both = cz.apply("model.safetensors", [cz.Prune(pattern="neurons", sparsity=0.3),
        ...                                       cz.Quantize(scheme="int8")])        # doctest: +SKIP
    """
    from compress.model import load
    from compress.progress import resolve

    progress = resolve(progress)
    cfg = prune_config(
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
    loaded = load(model, progress=progress)
    data = pruning_data(loaded, cfg, data, calib_samples, calib_seq_len)
    return apply(loaded, cfg, data=data, progress=progress)


def prune_config(
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
):
    """The prune pass's settings from the keyword arguments of `prune` (and `compress prune`)."""
    from compress.passes.prune import PruneConfig

    types = ["linear", "conv", "embedding"] if embeddings else ["linear", "conv"]
    return PruneConfig.from_dict(
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


def pruning_data(model: Any, cfg: Any, data: Any, n_samples: int, seq_len: int) -> Any:
    """Calibration data for a prune pass: the built-in text by default for a method that needs data."""
    from compress.calib import DEFAULT_SOURCE, calibration_data

    if data is None and cfg.uses_data() and model.tokenizer is not None:
        data = DEFAULT_SOURCE
    return calibration_data(data, model, n_samples=n_samples, seq_len=seq_len)
