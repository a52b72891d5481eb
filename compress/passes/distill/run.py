"""Putting a distillation together: teacher, student, data, objective, then the training loop."""

from __future__ import annotations

from compress.errors import BadInput, Unsupported
from compress.registry import PassContext, PassResult

SPARSE_MIN = 0.01  # a weight with at least this fraction of exact zeros was pruned: keep them zero


def distill(module, cfg, ctx: PassContext) -> PassResult:
    import torch

    from compress.model import load, resolve_checkpoint
    from compress.passes.distill.data import load_training_data
    from compress.passes.distill.qat import from_fake_quant, to_fake_quant
    from compress.passes.distill.student import drop_layers, layer_pairs

    device = training_device(ctx.device)
    teacher_path = resolve_checkpoint(cfg.teacher)
    teacher = ctx.model_spec.load(teacher_path) if ctx.model_spec is not None else load(teacher_path)
    if not teacher.runnable:
        raise BadInput(
            f"{teacher_path}: the teacher needs its config.json beside it, or its class named with "
            "--module (an architecture to run)."
        )
    check_family(module, teacher)
    config, kept, resized = None, None, set()
    if cfg.student_layers:
        config, kept, resized = drop_layers(module, cfg.student_layers)
    fake = to_fake_quant(module) if cfg.qat else []
    if cfg.qat and not fake:
        raise BadInput(
            "distill.qat: the student has no quantized layers; quantize it first (compress quantize)."
        )
    frozen = [n for n, m in module.named_modules() if hasattr(m, "qweight")]
    for p in module.parameters():
        p.requires_grad_(True)
    masks = sparsity_masks(module)

    t = cfg.training
    data = load_training_data(cfg.data, t.max_length)
    train_set, val_set = data.split(t.val_fraction, t.seed, t.val_max)
    pairs = layer_pairs(module, teacher.module, cfg.losses.layer_pairs, kept)
    if not cfg.checkpoints.resume:
        torch.manual_seed(t.seed)
    teacher.module.to(device).eval()
    module.to(device)
    try:
        run, record = _train(module, teacher, cfg, ctx, train_set, val_set, pairs, masks, device)
    finally:
        module.to("cpu")
        teacher.module.to("cpu")
    module.eval()
    if fake:
        from_fake_quant(module, fake)
    changes = {
        name: {"baseline_shape": None, "shape": list(module.state_dict()[name].shape), "layers_dropped": True}
        for name in resized
    }
    for name in fake:
        changes[f"{name}.weight"] = {**module.get_submodule(name).qweight.meta(), "qat": True}
    stats = _stats(run, record, teacher_path, data, train_set, val_set, device, kept, fake, frozen, masks)
    return PassResult(module=module, changes=changes, stats=stats, config=config)


def _stats(run, record, teacher_path, data, train_set, val_set, device, kept, fake, frozen, masks) -> dict:
    """What the pass records: counts for the header's stats, and the run's record for the report."""
    from compress.checkpoint import sha256_file

    history = run.history
    return {
        "distill.steps": float(run.step),
        "distill.total_steps": float(run.total_steps),
        "distill.best_step": float(run.best_step),
        "distill.retention_before": history[0]["retention"],
        "distill.retention_after": run.best_retention,
        "distill.train_samples": float(len(train_set)),
        "distill.val_samples": float(len(val_set)),
        "distill.seconds": run.seconds,
        "distill.record": {
            **record,
            "teacher": str(teacher_path),
            "teacher_sha256": sha256_file(teacher_path),
            "data": {
                **data.describe(),
                "train": len(train_set),
                "validation": len(val_set),
                "notes": data.notes,
            },
            "device": device,
            "cuda": cuda_status(),
            "steps": run.step,
            "total_steps": run.total_steps,
            "best_step": run.best_step,
            "stopped_early": run.stopped_early,
            "resumed_from_step": run.resumed_from,
            "seconds": run.seconds,
            "validation": history,
            "loss_first": run.losses[0] if run.losses else None,
            "loss_last": run.losses[-1] if run.losses else None,
            "layers_kept": kept,
            "qat_layers": len(fake),
            "frozen_quantized_layers": 0 if fake else len(frozen),
            "sparse_weights_kept_sparse": len(masks),
        },
    }


def _train(module, teacher, cfg, ctx, train_set, val_set, pairs, masks, device):
    import torch

    from compress.passes.distill.forward import Batcher, Tap
    from compress.passes.distill.objective import Objective, is_encoder, resolve_weights
    from compress.passes.distill.trainer import Trainer
    from compress.passes.distill.validation import Validator

    t = cfg.training
    options = {"use_cache": False} if teacher.family == "causal-lm" else {}
    batcher = Batcher(train_set, teacher, t.max_length, device, options)
    val_batcher = Batcher(val_set, teacher, t.max_length, device, options)
    s_tap = Tap(module, [s for s, _ in pairs])
    t_tap = Tap(teacher.module, [t for _, t in pairs])
    try:
        first = batcher(list(range(min(t.batch_size, len(train_set)))))
        with torch.no_grad():
            t_out, s_out = t_tap(first), s_tap(first)
        check_outputs(s_out, t_out)
        weights = resolve_weights(cfg.losses, t_out, s_out, train_set.labels is not None, pairs)
        objective = Objective(weights, pairs if weights.hidden else [], cfg.losses.temperature, s_out, t_out)
        objective.to(device)
        encoder = is_encoder(t_out)
        use_labels = train_set.labels is not None and (encoder or t_out.main.dim() == 2)
        validator = Validator(teacher.module, batcher, val_batcher, t.batch_size, encoder, use_labels)
        trainer = Trainer(
            t, cfg.checkpoints, module, t_tap, s_tap, objective, batcher, validator, masks, ctx.progress
        )
        fingerprint = {**cfg.fingerprint(), "teacher_sha256": _sha(cfg.teacher), "samples": len(train_set)}
        run = trainer.fit(fingerprint)
    finally:
        s_tap.close()
        t_tap.close()
    record = {
        "weights": weights.to_dict(),
        "temperature": cfg.losses.temperature,
        "layer_pairs": [f"{s}:{t}" for s, t in pairs] if weights.hidden else [],
        "projections": sorted(objective.projections.keys()),
        "validation_metric": validator.metric,
    }
    return run, record


def _sha(path: str) -> str:
    from compress.checkpoint import sha256_file
    from compress.model import resolve_checkpoint

    return sha256_file(resolve_checkpoint(path))


def training_device(asked: str) -> str:
    import torch

    if asked == "cuda" and not torch.cuda.is_available():
        raise Unsupported("distill: device cuda is unavailable (torch.cuda.is_available() is False).")
    if asked not in ("cpu", "cuda"):
        raise BadInput(f"distill: unknown device '{asked}'; valid: cpu, cuda.")
    return asked


def cuda_status() -> str:
    import torch

    return "available" if torch.cuda.is_available() else "unavailable: torch.cuda.is_available() is False"


def check_family(student, teacher) -> None:
    """Teacher and student must be the same kind of model (same architecture family and vocabulary)."""
    s_config = getattr(student, "config", None)
    t_config = teacher.config
    if s_config is None or t_config is None:
        return  # a model defined in code: its outputs are checked on the first batch
    s_type, t_type = getattr(s_config, "model_type", None), getattr(t_config, "model_type", None)
    if s_type != t_type:
        raise BadInput(
            f"the teacher is a '{t_type}' model and the student a '{s_type}' model; distillation needs "
            "a student of the teacher's family."
        )
    s_vocab, t_vocab = getattr(s_config, "vocab_size", None), getattr(t_config, "vocab_size", None)
    if s_vocab != t_vocab:
        raise BadInput(
            f"the teacher has a vocabulary of {t_vocab} tokens and the student {s_vocab}; they must match."
        )


def check_outputs(s_out, t_out) -> None:
    if (s_out.logits is None) != (t_out.logits is None) or s_out.main.dim() != t_out.main.dim():
        raise BadInput(
            f"the student's output ({tuple(s_out.main.shape)}) is not of the teacher's kind "
            f"({tuple(t_out.main.shape)}); distillation needs a student of the teacher's family."
        )


def sparsity_masks(module) -> list:
    """(weight, mask) for pruned Linear/Conv/Embedding weights, so training keeps their zeros."""
    from torch import nn

    out = []
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding | nn.modules.conv._ConvNd):
            w = m.weight
            zeros = w == 0
            if w.requires_grad and zeros.float().mean().item() >= SPARSE_MIN:
                out.append((w, ~zeros))
    return out
