"""`--target auto`: the quantization, export and runtime that are fastest on this machine.

`compress quantize MODEL` with no choice of its own takes the recommendation for the detected CPU
(compress.recommend: a table of measured choices by ISA class, best first) and turns it into the
recipe's settings: the scheme and activation mode of the quantize pass, the export the runtime loads,
and the evaluation's runtime, so the report's headline latency row is the chosen runtime's. A choice
the model cannot take is skipped for the next one, with the reason: an export needs an architecture
(config.json or --module), static activation ranges need calibration data the model can read.
The recipe's description says what was picked and why, and the report repeats it in its notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGETS = ("auto", "none")


@dataclass(frozen=True)
class Target:
    settings: dict[str, Any]  # quantize settings (scheme, activations, weight_bits)
    embeddings: bool  # quantize the embedding tables too (the exported graph gathers int8 rows)
    exports: list[str] = field(default_factory=list)
    runtime: str = "torch"
    reason: str = ""


def auto_target(source: str | Path, *, has_module: bool = False, calibration: str | None = None) -> Target:
    """The target for quantizing `source` on this machine (see the module docstring)."""
    from compress.hardware import detect
    from compress.model import load_config, resolve_checkpoint
    from compress.recommend import recommend

    folder = resolve_checkpoint(source).parent
    runnable = has_module or load_config(folder) is not None
    can_calibrate = (calibration or "").endswith(".npz") or _has_tokenizer(folder)

    def usable(choice) -> str | None:
        if choice.format != "safetensors" and not runnable:
            return "an export needs the model's architecture (config.json or --module)"
        if choice.activations == "static" and not can_calibrate:
            return "static activation ranges need calibration data this model can read (--calib FILE.npz)"
        if choice.scheme not in _schemes():
            return f"scheme {choice.scheme} is not built into this compress"
        return None

    rec = recommend(detect(), usable=usable)
    settings: dict[str, Any] = {"scheme": rec.scheme}
    if rec.scheme == "int8":
        settings.update(activations=rec.activations, weight_bits=rec.weight_bits)
    exports = [rec.format] if rec.format in ("onnx", "openvino") else []
    return Target(
        settings=settings,
        embeddings=bool(exports),
        exports=exports,
        runtime=rec.runtime,
        reason=f"target auto: {rec.reason}",
    )


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))


def _schemes() -> tuple[str, ...]:
    from compress.passes.quantize.config import SCHEMES

    return SCHEMES
