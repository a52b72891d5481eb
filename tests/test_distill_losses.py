"""The distillation losses on tensors whose values are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from compress.passes.distill import losses
from compress.passes.distill.qat import fake_quantize
from compress.passes.quantize.rtn import quantize_int4, quantize_int8


def test_logit_kl_matches_the_hand_computed_divergence():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # softmax: 3/4, 1/4
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.1308
    assert losses.logit_kl(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_logit_kl_with_temperature_softens_and_scales_by_t_squared():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    p = math.sqrt(3) / (1 + math.sqrt(3))  # softmax of ln(3)/2 and 0
    expected = 4 * (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5))
    assert losses.logit_kl(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-6)
    assert losses.logit_kl(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_logit_kl_leaves_masked_positions_out():
    student = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]])  # the second position is padding
    teacher = torch.tensor([[[math.log(3.0), 0.0], [-5.0, 5.0]]])
    mask = torch.tensor([[1, 0]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert losses.logit_kl(student, teacher, 1.0, mask).item() == pytest.approx(expected, rel=1e-6)


def test_hidden_mse_is_relative_to_the_teachers_mean_square():
    student = torch.tensor([[[1.0, 2.0]]])
    teacher = torch.tensor([[[1.0, 0.0]]])
    # mean squared difference (0 + 4) / 2 = 2, teacher mean square (1 + 0) / 2 = 0.5
    assert losses.hidden_mse(student, teacher).item() == pytest.approx(4.0)
    scaled = losses.hidden_mse(10 * student, 10 * teacher).item()
    assert scaled == pytest.approx(4.0)  # scale-free


def test_hidden_mse_ignores_padding_and_reads_channels_of_a_convolution():
    student = torch.tensor([[[1.0, 2.0], [9.0, 9.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert losses.hidden_mse(student, teacher, mask=torch.tensor([[1, 0]])).item() == pytest.approx(4.0)
    conv_s = torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1)  # [batch, channels, h, w]
    conv_t = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    assert losses.hidden_mse(conv_s, conv_t).item() == pytest.approx(4.0)


def test_projection_maps_a_narrower_student_and_starts_as_identity():
    proj = losses.projection(2, 3)
    student = torch.tensor([[[1.0, 2.0]]])
    assert losses.hidden_mse(student, torch.tensor([[[1.0, 2.0, 0.0]]]), proj).item() == pytest.approx(0.0)
    with pytest.raises(ValueError):
        losses.hidden_mse(student, torch.tensor([[[1.0, 2.0, 0.0]]]))  # widths differ, no projection


def test_embedding_cosine_of_mean_pooled_tokens():
    orthogonal = losses.embedding_cosine(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]]))
    assert orthogonal.item() == pytest.approx(1.0)
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # mean (0.5, 0.5)
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert losses.embedding_cosine(student, teacher).item() == pytest.approx(1 - 1 / math.sqrt(2))
    masked = losses.embedding_cosine(student, teacher, torch.tensor([[1, 0]]))
    assert masked.item() == pytest.approx(0.0, abs=1e-7)


def test_task_loss_is_cross_entropy():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert losses.task_loss(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))


@pytest.mark.parametrize("scheme", ["int8", "int4-sym", "int4-asym"])
def test_fake_quantization_matches_the_quantize_pass_and_passes_gradients_straight_through(scheme):
    torch.manual_seed(0)
    w = torch.randn(8, 64, requires_grad=True)
    if scheme == "int8":
        fq, stored = fake_quantize(w, "int8", None, True), quantize_int8(w.detach())
    else:
        symmetric = scheme == "int4-sym"
        fq, stored = fake_quantize(w, "int4", 32, symmetric), quantize_int4(w.detach(), 32, symmetric)
    assert torch.equal(fq.detach(), stored.dequantize())
    (fq * torch.arange(64.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(64.0).expand(8, 64))
