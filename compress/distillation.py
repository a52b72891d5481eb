"""Distillation in the public API and the command line: `distill()`, the student a run starts from,
and the report's `distillation` section (teacher, data, steps, retention before and after)."""

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
    from compress.pipeline import apply

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


def starting_student(student: Any, teacher: str, student_layers: int | None):
    """The student as the run starts from it (for scoring it before distillation)."""
    from compress.model import Model, load
    from compress.passes.distill.student import drop_layers

    model = load(teacher if student is None else student)
    if student_layers:
        drop_layers(model.module, student_layers)
        model = Model(
            module=model.module, family=model.family, config=model.module.config, tokenizer=model.tokenizer
        )
    return model


def add_distillation_section(report, artifact: Artifact, start, teacher: str, eval_opts: dict, inputs=None):
    """Fill `report.distillation` from the run's record, with the student's score before it on the
    evaluator's task (same task, same data, same teacher)."""
    from compress.eval.tasks import pick_task
    from compress.model import load

    record = dict(artifact.stats.get("distill.record", {}))
    base = load(teacher)
    chosen, _ = pick_task(
        base, eval_opts.get("task", "auto"), eval_opts.get("data"), inputs, eval_opts.get("limit")
    )
    if chosen is not None and start is not None:
        before = chosen.run(base, start)
        record["accuracy_before"] = {
            "task": before.task,
            "metric": before.metric,
            "value": before.value,
            "baseline": before.baseline,
            "retention": before.retention,
        }
    report.distillation = record
    return report
