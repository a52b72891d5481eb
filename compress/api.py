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
    data: Any = None,
    progress=None,
) -> Artifact:
    """Quantize a model's weights and return the Artifact (in memory; `.save(dir)` writes it).

    `model` is a path, a `Model` or a `torch.nn.Module` (copied, never changed in place).

    Example:
        >>> import compress as cz
        >>> int8 = cz.quantize("model.safetensors", scheme="int8", embeddings=True)   # doctest: +SKIP
        >>> int8.save("out/int8")                                                     # doctest: +SKIP
        >>> cz.evaluate(int8, baseline="model.safetensors")                           # doctest: +SKIP
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
        }
    )
    return apply(model, cfg, data=data, progress=progress)
