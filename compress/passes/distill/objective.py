"""The distillation objective: which losses apply to this teacher and data, with their weights.

A weight left unset (None) is automatic: logit KL when the models have logits, embedding cosine for
an encoder, hidden-state MSE when there are layer pairs; the task loss only when asked for. A weight
set for a loss that cannot apply (KL on an encoder, the task loss without labels) is an error, not
silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.errors import BadInput
from compress.passes.distill import losses


@dataclass
class Weights:
    kl: float
    hidden: float
    embedding: float
    task: float

    def to_dict(self) -> dict:
        return {"kl": self.kl, "hidden": self.hidden, "embedding": self.embedding, "task": self.task}


def resolve_weights(cfg, teacher_out, student_out, labelled: bool, pairs: list) -> Weights:
    has_logits = teacher_out.logits is not None and student_out.logits is not None
    encoder = is_encoder(teacher_out)

    def pick(name: str, value: float | None, auto: float, applies: bool, why: str) -> float:
        if value is None:
            return auto if applies else 0.0
        if value < 0:
            raise BadInput(f"distill.{name}: {value} is negative.")
        if value > 0 and not applies:
            raise BadInput(f"distill.{name}: {why}; set it to 0 or leave it out.")
        return value

    weights = Weights(
        kl=pick("losses.kl", cfg.kl, 1.0, has_logits, "the teacher or student has no logits"),
        hidden=pick("losses.hidden", cfg.hidden, 1.0, bool(pairs), "there are no layer pairs"),
        embedding=pick("losses.embedding", cfg.embedding, 1.0, encoder, "embedding cosine is for encoders"),
        task=pick(
            "losses.task",
            cfg.task,
            0.0,
            labelled and has_logits and teacher_out.logits.dim() == 2,
            "the task loss needs labelled data and a model that outputs one row of logits per sample",
        ),
    )
    if not any(weights.to_dict().values()):
        raise BadInput("distill: every loss weight is 0; nothing would be learned.")
    if has_logits and teacher_out.logits.shape[-1] != student_out.logits.shape[-1]:
        raise BadInput(
            f"distill: the teacher scores {teacher_out.logits.shape[-1]} classes and the student "
            f"{student_out.logits.shape[-1]}; they are not the same task."
        )
    return weights


def is_encoder(outputs) -> bool:
    """An encoder's main output is a [batch, tokens, width] hidden state, not logits."""
    return outputs.logits is None and outputs.main.dim() == 3


class Objective(nn.Module):
    """Weighted sum of the losses; owns the learned projections of the hidden-state pairs."""

    def __init__(self, weights: Weights, pairs: list, temperature: float, student_out, teacher_out):
        super().__init__()
        self.weights, self.pairs, self.temperature = weights, pairs, temperature
        self.projections = nn.ModuleDict()
        for i, (s, t) in enumerate(pairs if weights.hidden else []):
            ws, wt = losses.width(student_out.hidden[s]), losses.width(teacher_out.hidden[t])
            if ws != wt:
                self.projections[str(i)] = losses.projection(ws, wt)

    def forward(self, student_out, teacher_out, batch) -> dict:
        """Each applicable loss, and their weighted sum under 'total'."""
        w, parts = self.weights, {}
        if w.kl:
            mask = batch.mask if student_out.logits.dim() == 3 else None
            parts["kl"] = losses.logit_kl(student_out.logits, teacher_out.logits, self.temperature, mask)
        if w.hidden:
            projections = dict(self.projections.items())
            terms = [
                losses.hidden_mse(
                    student_out.hidden[s],
                    teacher_out.hidden[t],
                    projections.get(str(i)),
                    batch.mask,
                )
                for i, (s, t) in enumerate(self.pairs)
            ]
            parts["hidden"] = sum(terms) / len(terms)
        if w.embedding:
            parts["embedding"] = losses.embedding_cosine(student_out.main, teacher_out.main, batch.mask)
        if w.task:
            parts["task"] = losses.task_loss(student_out.logits, batch.labels)
        parts["total"] = sum(getattr(w, k) * v for k, v in parts.items())
        return parts
