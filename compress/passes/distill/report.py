"""What the distill pass adds to a run's evaluation: the report's `distillation` section (teacher,
data, steps, retention before and after), and sample inputs from its training data for a model
without a tokenizer. Hooks of the pass's PassSpec."""

from __future__ import annotations

from typing import Any


def starting_student(source: Any, cfg) -> Any:
    """The student as the run starts from it (for scoring it before distillation)."""
    from compress.model import Model, load
    from compress.passes.distill.student import drop_layers

    model = load(source)
    if cfg.student_layers:
        import copy

        module = copy.deepcopy(model.module)
        drop_layers(module, cfg.student_layers)
        model = Model(module=module, family=model.family, config=module.config, tokenizer=model.tokenizer)
    return model


def annotate_report(report, artifact: Any, cfg, source: Any, evaluation, inputs=None) -> None:
    """Fill `report.distillation` from the run's record, with the student's score before it on the
    evaluator's task (same task, same data, same teacher). The distill pass's report hook."""
    from compress.eval.tasks import pick_task
    from compress.model import load

    record = dict(artifact.stats.get("distill.record", {})) if artifact is not None else {}
    spec = getattr(source, "spec", None)  # the user's class the run loads checkpoints into (--module)
    base = spec.load(cfg.teacher) if spec is not None else load(cfg.teacher)
    chosen, _ = pick_task(
        base, evaluation.task, evaluation.data, inputs, evaluation.limit, evaluation.task_options
    )
    start = starting_student(source, cfg)
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


def sample_inputs(cfg, batch_size: int):
    """For a model without a tokenizer (training data in an .npz): a batch of it to time and compare on."""
    if not str(cfg.data).endswith(".npz"):
        return None
    from compress.passes.distill.data import load_training_data

    return load_training_data(cfg.data, 2).inputs[:batch_size]
