"""Distillation losses: each compares the student's outputs with the teacher's on the same batch.

- logit KL: Hinton's soft targets, KL(teacher || student) on softmax(logits / T), times T² so the
  gradient keeps its size whatever the temperature; averaged over the scored positions.
- hidden MSE: the squared difference of a student layer's output (through a learned projection when
  the widths differ) and a teacher layer's, divided by the teacher's mean square, so layers of
  different scale weigh alike; padding positions are left out.
- embedding cosine: 1 - cosine of the mean-pooled sentence embeddings (what an encoder is used for).
- task: cross-entropy with the labels, when the data has labels and the model has logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def logit_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """T² · KL(softmax(teacher / T) || softmax(student / T)), averaged over positions ([..., classes])."""
    t = temperature
    log_p_student = F.log_softmax(student.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / t, dim=-1)
    per_position = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return _masked_mean(per_position, mask) * t * t


def hidden_mse(
    student: torch.Tensor,
    teacher: torch.Tensor,
    projection: nn.Module | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared difference over the teacher's mean square; features on the last axis of a
    [batch, tokens, width] output, or on axis 1 of a convolution's [batch, channels, h, w]."""
    s, t = _features_last(student.float()), _features_last(teacher.float())
    if projection is not None:
        s = projection(s)
    if s.shape != t.shape:
        raise ValueError(f"student output {tuple(s.shape)} does not match the teacher's {tuple(t.shape)}")
    per_position = (s - t).pow(2).mean(-1)
    scale = _masked_mean(t.pow(2).mean(-1), mask).detach().clamp(min=1e-12)
    return _masked_mean(per_position, mask) / scale


def embedding_cosine(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - cosine of the mean-pooled [batch, tokens, width] outputs, averaged over the batch."""
    return 1 - F.cosine_similarity(mean_pool(student.float(), mask), mean_pool(teacher.float(), mask)).mean()


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of [batch, classes] logits with integer labels."""
    return F.cross_entropy(logits.float(), labels)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Average over tokens that the attention mask keeps (all tokens without a mask)."""
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def projection(student_width: int, teacher_width: int) -> nn.Linear:
    """A learned map from the student's width to the teacher's, started as a truncated identity."""
    layer = nn.Linear(student_width, teacher_width, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        n = min(student_width, teacher_width)
        layer.weight[:n, :n] = torch.eye(n)
    return layer


def width(output: torch.Tensor) -> int:
    """The feature width of a layer output, as hidden_mse reads it."""
    return output.shape[1] if output.dim() == 4 else output.shape[-1]


def _features_last(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1) if x.dim() == 4 else x


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over all positions, or over those the [batch, tokens] mask keeps."""
    if mask is None or values.dim() != mask.dim():
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)
