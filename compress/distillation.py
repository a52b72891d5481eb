"""Distillation in the public API: `distill()` builds the one-pass recipe and runs it (compress.api)."""

from __future__ import annotations

from typing import Any

from compress.artifact import Artifact
from compress.errors import BadInput


def distill(
    student: Any = None,
    *,
    teacher: str,
    data: str,
    student_layers: int | None = None,
    qat: bool = False,
    losses: dict | None = None,
    training: dict | None = None,
    checkpoints: dict | None = None,
    device: str = "auto",
    progress=None,
) -> Artifact:
    """Distil `teacher` (a checkpoint path) into `student` and return the Artifact (`.save(dir)`).

    `student` is a path (a pruned or quantized checkpoint), a Model or a torch.nn.Module; left out,
    it is the teacher itself, made smaller with `student_layers`. `data` is a text file, .jsonl/.csv,
    .npz, or built-in `spam` (its train half) / `wiki-train`. `losses`, `training` and `checkpoints`
    are dicts of the settings in compress.passes.distill (e.g. training={"epochs": 3, "lr": 5e-5}).

    Example:
        >>> import compress as cz
        >>> small = cz.distill(teacher="minilm/", data="spam", student_layers=3)            # doctest: +SKIP
        >>> tuned = cz.distill("pruned/", teacher="minilm/", data="spam",
        ...                    training={"epochs": 3})                                       # doctest: +SKIP
        >>> int4 = cz.distill("int4/", teacher="minilm/", data="wiki-train", qat=True)      # doctest: +SKIP
    """
    from compress.api import apply

    cfg = distill_config(teacher, data, student_layers, qat, losses, training, checkpoints)
    source = teacher if student is None else student
    if student is None and not student_layers:
        raise BadInput("distill: give a student, or student_layers to make one from the teacher.")
    return apply(source, cfg, device=resolve_device(device), progress=progress)


def distill_config(
    teacher, data, student_layers=None, qat=False, losses=None, training=None, checkpoints=None
):
    from compress.passes.distill import DistillConfig

    return DistillConfig.from_dict(
        {
            "teacher": str(teacher),
            "data": str(data),
            "student_layers": student_layers,
            "qat": qat,
            "losses": losses or {},
            "training": training or {},
            "checkpoints": checkpoints or {},
        }
    )


def resolve_device(device: str) -> str:
    """'auto' is CUDA when there is a GPU, else the CPU; 'cuda' without one is an error in the pass."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
