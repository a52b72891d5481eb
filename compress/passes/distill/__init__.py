"""The `distill` pass: train a student to reproduce its teacher (knowledge distillation).

The module the pass receives is the student: a pruned or quantized checkpoint, or, with
`student_layers`, a copy of the teacher that keeps every k-th transformer layer. The teacher is a
checkpoint path (never an object in the settings), loaded by the pass. Quantized students train
their weights through fake quantization (`qat`) and end in the quantize pass's stored format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from compress.config import PassConfig, Settings
from compress.errors import BadInput
from compress.registry import PassContext, PassResult, PassSpec


@dataclass(frozen=True, kw_only=True)
class Losses(Settings):
    """Loss weights (None: automatic, see objective.py), the KL temperature, and the layer pairs of
    the hidden-state loss ('student_module:teacher_module'; default: each transformer layer)."""

    kl: float | None = None
    hidden: float | None = None
    embedding: float | None = None
    task: float | None = None
    temperature: float = 2.0
    layer_pairs: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.temperature <= 0:
            raise BadInput(f"distill.losses.temperature: {self.temperature} must be positive.")


@dataclass(frozen=True, kw_only=True)
class Training(Settings):
    """The loop: steps, optimizer (AdamW), schedule, validation and early stopping.

    A step is `batch_size x grad_accum` samples. `max_steps` (when > 0) stops before the epochs end.
    `eval_every` steps (0: at the end of each epoch) the student is scored on the held-out
    `val_fraction` of the data (at most `val_max` samples); `patience` evaluations without a gain
    above `min_delta` stop the run early (0: never). `max_length` caps tokens per text.
    """

    epochs: int = 1
    max_steps: int = 0
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup: float = 0.06
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 0
    val_fraction: float = 0.1
    val_max: int = 256
    eval_every: int = 0
    patience: int = 0
    min_delta: float = 0.0

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "val_max"):
            if getattr(self, name) < 1:
                raise BadInput(f"distill.training.{name}: {getattr(self, name)} must be at least 1.")
        for name in ("max_steps", "eval_every", "patience"):
            if getattr(self, name) < 0:
                raise BadInput(f"distill.training.{name}: {getattr(self, name)} must not be negative.")
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise BadInput("distill.training: lr and max_grad_norm must be positive.")
        if not 0 <= self.warmup < 1 or not 0 < self.val_fraction < 1:
            raise BadInput("distill.training: warmup must be in [0, 1) and val_fraction in (0, 1).")
        if self.max_length < 2:
            raise BadInput(f"distill.training.max_length: {self.max_length} must be at least 2.")


@dataclass(frozen=True, kw_only=True)
class Checkpoints(Settings):
    """Where training checkpoints go ('' : none, the best weights stay in memory), how often (steps),
    and whether to continue from the last one there."""

    dir: str = ""
    every: int = 50
    resume: bool = False

    def validate(self) -> None:
        if self.every < 0:
            raise BadInput(f"distill.checkpoints.every: {self.every} must not be negative.")
        if self.resume and not self.dir:
            raise BadInput("distill.checkpoints.resume: give the checkpoint folder to resume from (dir).")


@dataclass(frozen=True, kw_only=True)
class DistillConfig(PassConfig):
    """Knowledge distillation settings.

    teacher: the teacher checkpoint (a .safetensors file or its folder, with config.json).
    data: training data: a text file, .jsonl/.csv, .npz, or built-in spam / wiki-train.
    student_layers: make the student from the model by keeping this many of its layers.
    qat: train quantized weights through fake quantization (else they stay as they are).
    """

    kind: ClassVar[str] = "distill"
    teacher: str = ""
    data: str = ""
    student_layers: int | None = None
    qat: bool = False
    losses: Losses = field(default_factory=Losses)
    training: Training = field(default_factory=Training)
    checkpoints: Checkpoints = field(default_factory=Checkpoints)

    def validate(self) -> None:
        if not self.teacher:
            raise BadInput("distill.teacher: give the teacher checkpoint (a path).")
        if not self.data:
            raise BadInput("distill.data: give training data (a file, or built-in spam / wiki-train).")
        if self.student_layers is not None and self.student_layers < 1:
            raise BadInput(f"distill.student_layers: {self.student_layers} must be at least 1.")

    def describe(self) -> str:
        what = f"{self.student_layers}-layer student" if self.student_layers else "student"
        t = self.training
        return f"{what} from {self.teacher}, {t.epochs} epoch(s) on {self.data}" + (
            ", QAT" if self.qat else ""
        )

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the interrupted one."""
        out = self.to_dict()
        out.pop("checkpoints")
        return out


def apply(module, cfg: DistillConfig, ctx: PassContext) -> PassResult:
    from compress.passes.distill.run import distill

    return distill(module, cfg, ctx)


def _annotate(*args: Any) -> None:
    from compress.passes.distill.report import annotate_report

    annotate_report(*args)


def _sample_inputs(cfg: DistillConfig, batch_size: int) -> Any:
    from compress.passes.distill.report import sample_inputs

    return sample_inputs(cfg, batch_size)


PASS = PassSpec(
    kind="distill",
    config=DistillConfig,
    apply=apply,
    summary="knowledge distillation from a teacher checkpoint (logit KL, hidden MSE, embedding cosine, QAT)",
    annotate_report=_annotate,
    sample_inputs=_sample_inputs,
    baseline=lambda cfg: cfg.teacher,
    data_kind="training",
)
