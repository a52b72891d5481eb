"""`compress distill`: train a student from a teacher checkpoint, then evaluate it against the teacher
(with the student's score before distillation beside it)."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.common import eval_options, evaluation_from_options, handle_errors, stderr
from compress.cli.execute import execute, run_options


def eval_data_as(flag: str):
    """Rename the evaluator's --data option: in this command --data is the training data."""

    def rename(fn):
        for param in getattr(fn, "__click_params__", []):
            if param.name == "data":
                param.opts = [flag]
                param.help = "Labelled evaluation data (.jsonl/.csv) or a built-in set (spam: its test half)."
        return fn

    return rename


@click.command()
@click.argument("source", required=False, type=click.Path(path_type=str))
@click.option(
    "--teacher", required=True, metavar="PATH", help="Teacher checkpoint (.safetensors or its folder)."
)
@click.option(
    "--data",
    "train_data",
    required=True,
    metavar="PATH|NAME",
    help="Training data: .txt, .jsonl/.csv (text, optional label), .npz, or built-in spam / wiki-train.",
)
@click.option("--student-layers", type=int, metavar="N", help="Student: the model with N of its layers kept.")
@click.option("--qat", is_flag=True, help="Train quantized weights through fake quantization.")
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option(
    "--max-steps", type=int, default=0, show_default=True, help="Stop after N steps (0: the epochs)."
)
@click.option("--train-batch-size", type=int, default=16, show_default=True, help="Samples per micro-batch.")
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per step.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Peak learning rate (AdamW).")
@click.option(
    "--schedule", type=click.Choice(["linear", "cosine", "constant"]), default="linear", show_default=True
)
@click.option("--warmup", type=float, default=0.06, show_default=True, help="Warm-up fraction of the steps.")
@click.option("--max-length", type=int, default=128, show_default=True, help="Tokens per training text.")
@click.option("--temperature", type=float, default=2.0, show_default=True, help="Logit KL temperature.")
@click.option("--kl-weight", type=float, help="Logit KL weight (default: 1 when there are logits).")
@click.option("--hidden-weight", type=float, help="Hidden-state MSE weight (default: 1 with layer pairs).")
@click.option("--embedding-weight", type=float, help="Embedding cosine weight (default: 1 for encoders).")
@click.option("--task-weight", type=float, help="Task (label) cross-entropy weight (default: 0).")
@click.option(
    "--layer-pair",
    "layer_pairs",
    multiple=True,
    metavar="S:T",
    help="Student:teacher module pair (repeatable).",
)
@click.option(
    "--eval-every", type=int, default=0, show_default=True, help="Validate every N steps (0: per epoch)."
)
@click.option(
    "--patience", type=int, default=0, show_default=True, help="Stop after N validations without gain."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint-dir", metavar="DIR", help="Training checkpoints (default: <output>-checkpoints).")
@click.option(
    "--checkpoint-every", type=int, default=50, show_default=True, help="Steps between checkpoints."
)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint after an interruption.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep the checkpoint folder after success.")
@click.option(
    "--train-device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where to train; auto takes the GPU when there is one.",
)
@run_options
@eval_data_as("--eval-data")
@eval_options
@handle_errors
def distill(
    source: str | None,
    teacher: str,
    train_data: str,
    student_layers: int | None,
    qat: bool,
    layer_pairs: tuple[str, ...],
    checkpoint_dir: str | None,
    checkpoint_every: int,
    resume: bool,
    keep_checkpoints: bool,
    train_device: str,
    **opts,
) -> None:
    """Distil TEACHER into SOURCE (a pruned or quantized checkpoint), or into a smaller copy of the
    teacher (--student-layers), and evaluate the result against the teacher.

    \b
    compress distill pruned/ --teacher model.safetensors --data train.txt --epochs 3 -o distilled/
    compress distill --student-layers 3 --teacher model.safetensors --data spam -o small/
    compress distill int4/ --teacher model.safetensors --data train.txt --qat -o int4-qat/
    """
    from compress.distillation import distill_config, resolve_device
    from compress.plan import default_output_dir
    from compress.recipe import Recipe

    if source is None and not student_layers:
        raise click.UsageError("give a student checkpoint (SOURCE) or --student-layers N.")
    out = Path(opts["output"] or default_output_dir(source or teacher, "distilled"))
    opts["output"] = str(out)
    folder = Path(checkpoint_dir) if checkpoint_dir else out.parent / f"{out.name}-checkpoints"
    training = {key: opts.pop(option) for key, option in TRAINING_OPTIONS.items()}
    losses = {key: opts.pop(option) for key, option in LOSS_OPTIONS.items()}
    losses["layer_pairs"] = list(layer_pairs)
    checkpoints = {"dir": str(folder), "every": checkpoint_every, "resume": resume}
    cfg = distill_config(teacher, train_data, student_layers, qat, losses, training, checkpoints)
    recipe = Recipe(passes=[cfg], evaluation=evaluation_from_options(opts), name="distilled")
    try:
        result = execute(
            recipe,
            source or teacher,
            opts,
            command="distill",
            device=resolve_device(train_device),
            describe=cfg.describe(),
        )
    except KeyboardInterrupt:
        if (folder / "last.safetensors").exists():
            stderr.print(f"training checkpoint kept in {folder}: run the same command with --resume.")
        raise
    if result is not None and not keep_checkpoints:
        remove_checkpoints(folder)


# Option name -> setting, for the training loop and the losses (compress.passes.distill).
TRAINING_OPTIONS = {
    "epochs": "epochs",
    "max_steps": "max_steps",
    "batch_size": "train_batch_size",
    "grad_accum": "grad_accum",
    "lr": "lr",
    "schedule": "schedule",
    "warmup": "warmup",
    "max_length": "max_length",
    "eval_every": "eval_every",
    "patience": "patience",
    "seed": "seed",
}
LOSS_OPTIONS = {
    "temperature": "temperature",
    "kl": "kl_weight",
    "hidden": "hidden_weight",
    "embedding": "embedding_weight",
    "task": "task_weight",
}


def remove_checkpoints(folder: Path) -> None:
    """Delete the training checkpoints this command wrote, and the folder if nothing else is in it."""
    from compress.passes.distill.trainer import BEST, LAST

    for name in (LAST, BEST):
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
