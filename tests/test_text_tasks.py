"""Perplexity and calibration data on hand-checkable inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import compress as cz
from compress.calibration import Calibration, draw
from compress.errors import BadInput
from compress.eval.data import load_text
from compress.eval.tasks import Perplexity
from compress.model import Model
from compress.testing import tiny_tokenizer


class Uniform(nn.Module):
    """A 'language model' that gives every token the same score: its perplexity is the vocabulary size."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids):
        return torch.zeros(*input_ids.shape, self.vocab)


def _uniform_model() -> Model:
    tokenizer = tiny_tokenizer()
    return Model(module=Uniform(len(tokenizer)), family="causal-lm", tokenizer=tokenizer)


@pytest.mark.parametrize(("window", "stride"), [(16, 16), (16, 5), (32, 1)])
def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(window, stride):
    task = Perplexity("the team meeting report is today " * 20, "text", window=window, stride=stride)
    model = _uniform_model()
    ids = task.token_ids(model)
    ppl, scored = task.perplexity(model, ids)
    assert ppl == pytest.approx(len(model.tokenizer))
    expected = len(ids) - 1 - sum(1 for b in range(window, len(ids), stride) if stride == window)
    assert scored == expected


class Peaked(Uniform):
    """Uniform, except one token (never in the text) scored `log(vocab + 1)` higher: every token of the
    text then has probability 1 / (2 * vocab), so the perplexity is exactly twice the vocabulary size."""

    def __init__(self, vocab: int, token: int):
        super().__init__(vocab)
        self.token = token

    def forward(self, input_ids):
        logits = super().forward(input_ids)
        logits[..., self.token] = math.log(self.vocab + 1)
        return logits


def test_perplexity_retention_is_baseline_over_candidate():
    uniform = _uniform_model()
    vocab = len(uniform.tokenizer)
    mask = uniform.tokenizer.mask_token_id
    peaked = Model(module=Peaked(vocab, mask), family="causal-lm", tokenizer=uniform.tokenizer)
    task = Perplexity("please fix the bug in the release today " * 30, "text", window=32, stride=16)
    assert mask not in task.token_ids(uniform).tolist()
    worse = task.run(uniform, peaked)  # the candidate is twice as perplexed: retention 1/2
    assert worse.baseline == pytest.approx(vocab) and worse.value == pytest.approx(2 * vocab)
    assert worse.retention == pytest.approx(0.5)
    better = task.run(peaked, uniform)
    assert better.retention == pytest.approx(2.0)
    assert not worse.higher_is_better


def test_perplexity_retention_of_a_quantized_llama(tiny_llama):
    model = cz.load(tiny_llama)
    int4 = cz.quantize(model, scheme="int4", group_size=16).model
    task = Perplexity("please fix the bug in the release today " * 30, "text", window=32, stride=16)
    result = task.run(model, int4)
    ids = task.token_ids(model)
    base, _ = task.perplexity(model, ids)
    cand, _ = task.perplexity(int4, ids)
    assert math.isfinite(result.value) and result.value == pytest.approx(cand)
    assert abs(cand - base) > 1e-3 * base  # a different model, so the ratio below means something
    assert result.retention == pytest.approx(base / cand)


def test_text_too_short_for_one_window():
    task = Perplexity("too short", "short.txt", window=64)
    with pytest.raises(BadInput, match="one window needs 64"):
        task.token_ids(_uniform_model())


def test_builtin_wiki_halves_do_not_overlap():
    test, train = load_text("wiki"), load_text("wiki-train")
    assert len(test) > 100_000 and len(train) > 100_000
    assert test.split("\n\n")[0] not in train


def test_calibration_is_deterministic_and_checks_size(tmp_path):
    tok = tiny_tokenizer()
    a = draw(Calibration(samples=4, seq_len=32, seed=1), tok)
    b = draw(Calibration(samples=4, seq_len=32, seed=1), tok)
    c = draw(Calibration(samples=4, seq_len=32, seed=2), tok)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a.samples, b.samples, strict=True))
    assert any(
        not torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a.samples, c.samples, strict=True)
    )
    assert a.samples[0]["input_ids"].shape == (1, 32)
    small = tmp_path / "small.txt"
    small.write_text("free money now")
    with pytest.raises(BadInput, match="fewer than one calibration sample"):
        draw(Calibration(data=str(small), samples=2, seq_len=32), tok)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(BadInput, match="is empty"):
        draw(Calibration(data=str(tmp_path / "empty.txt")), tok)


def test_npz_calibration(tmp_path):
    import numpy as np

    np.savez(tmp_path / "x.npz", images=np.random.rand(10, 1, 16, 16).astype("float32"))
    data = draw(Calibration(data=str(tmp_path / "x.npz"), samples=4))
    assert len(data) == 4 and data.samples[0].shape == (1, 1, 16, 16)
    np.savez(tmp_path / "e.npz", images=np.zeros((0, 3)))
    with pytest.raises(BadInput, match="empty"):
        draw(Calibration(data=str(tmp_path / "e.npz")))
