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
    embeddings: bool = False,
    include: tuple[str, ...] = ("*",),
    exclude: tuple[str, ...] = (),
    keep_int8: tuple[str, ...] = (),
    data: Any = None,
    calib: dict | None = None,
    progress=None,
    **method_settings: Any,
) -> Artifact:
    """Quantize a model's weights and return the Artifact (in memory; `.save(dir)` writes it).

    `model` is a path, a `Model` or a `torch.nn.Module` (copied, never changed in place).
    `method`: rtn, mse, hqq (no data) or gptq, awq (calibration data: `data` is a path, a built-in
    text such as "wiki-train", a tensor or a list of samples; `calib` sets samples, seq_len and seed).
    `keep_int8` keeps the layers it names at INT8 in an INT4 run; `exclude` keeps them in float.
    Method settings (damp, act_order, clip) pass through as keywords.

    Example:
        >>> import compress as cz
        >>> int8 = cz.quantize("model.safetensors", scheme="int8", embeddings=True)   # doctest: +SKIP
        >>> int8.save("out/int8")                                                     # doctest: +SKIP
        >>> cz.evaluate(int8, baseline="model.safetensors")                           # doctest: +SKIP
        >>> int4 = cz.quantize("gemma", "int4", method="gptq", data="wiki-train",
        ...                    calib={"samples": 64, "seq_len": 512})                 # doctest: +SKIP
    """
    from compress.passes.quantize import QuantizeConfig

    cfg = QuantizeConfig.from_dict(
        {
            "scheme": scheme,
            "group_size": group_size,
            "symmetric": symmetric,
            "method": method,
            "targets": {
                "types": ["linear", "embedding"] if embeddings else ["linear"],
                "include": list(include),
                "exclude": list(exclude),
            },
            "keep_int8": list(keep_int8),
            **({"calib": calib} if calib else {}),
            **method_settings,
        }
    )
    return apply(model, cfg, data=data, progress=progress)
