"""The distill pass on tiny models: layer-dropped students, resume, QAT, sparsity, and bad input."""

from __future__ import annotations

import json
import random

import pytest
import torch

import compress as cz
from compress.errors import BadInput, Unsupported
from compress.passes.distill import trainer
from compress.testing import WORDS

QUICK = {"epochs": 1, "batch_size": 8, "max_length": 16}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (two threads wait on each other on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_jsonl(path, n: int = 48, labelled: bool = True):
    rng = random.Random(0)
    rows = []
    for i in range(n):
        row = {"text": " ".join(rng.choice(WORDS) for _ in range(10))}
        if labelled:
            row["label"] = "spam" if i % 2 else "ham"
        rows.append(row)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def states_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_layer_dropped_student_saves_and_loads_back_as_a_smaller_bert(tiny_bert, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl")
    art = cz.distill(teacher=str(tiny_bert), data=str(data), student_layers=1, training=QUICK)
    record = art.stats["distill.record"]
    assert record["layers_kept"] == [1]  # the last layer of two
    assert record["layer_pairs"] == ["encoder.layer.0:encoder.layer.1"]
    assert record["weights"]["embedding"] == 1.0 and record["weights"]["kl"] == 0.0  # an encoder
    assert record["validation_metric"] == "probe accuracy"
    assert record["device"] == "cpu" and record["cuda"].startswith("unavailable")
    assert record["steps"] == 6  # 43 training samples / 8 per step
    path = art.save(tmp_path / "small")
    assert json.loads((tmp_path / "small" / "config.json").read_text())["num_hidden_layers"] == 1
    back = cz.load(path)
    assert len(back.module.encoder.layer) == 1
    ids = {"input_ids": torch.tensor([[2, 10, 11, 3]])}
    with torch.no_grad():
        expected = art.model.module(**ids).last_hidden_state
        assert torch.allclose(back.module(**ids).last_hidden_state, expected, atol=1e-6)
    from transformers import AutoModel

    plain = AutoModel.from_pretrained(tmp_path / "small")  # transformers alone loads it too
    assert plain.config.num_hidden_layers == 1


def test_distillation_moves_a_different_student_towards_the_teacher(tiny_bert, tmp_path):
    from compress.testing import write_tiny_bert

    student = write_tiny_bert(tmp_path / "other", seed=1)  # same architecture, other random weights
    data = write_jsonl(tmp_path / "train.jsonl", n=64, labelled=False)
    training = {**QUICK, "epochs": 4, "lr": 3e-3}
    art = cz.distill(str(student), teacher=str(tiny_bert), data=str(data), training=training)
    record = art.stats["distill.record"]
    assert record["validation_metric"] == "cosine"
    history = record["validation"]
    assert history[-1]["value"] > history[0]["value"] + 0.05
    assert record["loss_last"] < record["loss_first"]


def _interrupt_at(monkeypatch, step: int, error: type[BaseException]):
    original = trainer.Trainer.train_step

    def train_step(self):
        if self.run.step == step:
            raise error("stopped here")
        original(self)

    monkeypatch.setattr(trainer.Trainer, "train_step", train_step)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_resume_gives_the_same_student_as_an_uninterrupted_run(tiny_bert, tmp_path, monkeypatch, error):
    """Ctrl-C saves the last completed step; a crash loses only the steps after the last checkpoint."""
    data = write_jsonl(tmp_path / "train.jsonl", n=64)
    training = {**QUICK, "epochs": 2, "eval_every": 3, "lr": 1e-3}  # dropout is on: the random state matters

    def run(folder, resume=False):
        checkpoints = {"dir": str(tmp_path / folder), "every": 2, "resume": resume}
        return cz.distill(
            teacher=str(tiny_bert),
            data=str(data),
            student_layers=1,
            training=training,
            checkpoints=checkpoints,
        )

    whole = run("whole")
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 5, error)
        with pytest.raises(error):
            run("broken")
    resumed = run("broken", resume=True)
    record = resumed.stats["distill.record"]
    assert record["resumed_from_step"] == (5 if error is KeyboardInterrupt else 4)
    assert (
        record["steps"] == whole.stats["distill.record"]["steps"] == 16
    )  # 58 training samples, 8 steps an epoch
    assert states_equal(resumed.model.module.state_dict(), whole.model.module.state_dict())
    assert record["validation"] == whole.stats["distill.record"]["validation"]


def test_the_best_validated_weights_are_returned_and_early_stopping_stops(tiny_bert, tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "train.jsonl", n=64, labelled=False)
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.95])

    from compress.passes.distill import validation

    def score(self, student):
        value = next(scores)
        return validation.Score("cosine", value, 1.0, value)

    monkeypatch.setattr(validation.Validator, "score", score)
    kept = {}
    original = trainer.Trainer.keep_best

    def keep_best(self):
        original(self)
        kept[self.run.step] = {k: v.clone() for k, v in self.student.state_dict().items()}

    monkeypatch.setattr(trainer.Trainer, "keep_best", keep_best)
    training = {**QUICK, "epochs": 4, "eval_every": 1, "patience": 2, "lr": 1e-2}
    art = cz.distill(teacher=str(tiny_bert), data=str(data), student_layers=1, training=training)
    record = art.stats["distill.record"]
    assert record["stopped_early"] and record["steps"] == 3  # 0.9 at step 1, then two worse
    assert record["best_step"] == 1 and art.stats["distill.retention_after"] == 0.9
    assert states_equal(art.model.module.state_dict(), kept[1])


def test_qat_student_trains_and_saves_in_the_quantized_format(tiny_llama, tmp_path):
    int4 = cz.quantize(str(tiny_llama), "int4", group_size=32).save(tmp_path / "int4")
    text = tmp_path / "train.txt"
    text.write_text(
        "\n\n".join(" ".join(random.Random(i).choice(WORDS) for _ in range(20)) for i in range(40))
    )
    art = cz.distill(
        str(int4), teacher=str(tiny_llama), data=str(text), qat=True, training={**QUICK, "lr": 1e-2}
    )
    record = art.stats["distill.record"]
    # 7 Linear layers in each of 2 blocks, the embedding table and its tied head (INT8 by default)
    assert record["qat_layers"] == 16
    assert record["weights"]["kl"] == 1.0
    out = art.save(tmp_path / "int4-qat")
    back = cz.load(out)
    before = cz.load(int4)
    name = "model.layers.0.mlp.up_proj"
    layer = back.module.get_submodule(name)
    assert type(layer).__name__ == "QuantLinear" and layer.scheme == "int4" and layer.group_size == 32
    assert not torch.equal(layer.weight, before.module.get_submodule(name).weight)  # the codes were trained
    header = json.loads(cz.load(out).compression.to_metadata()["compress.tensors"])
    assert header[f"{name}.weight"]["scheme"] == "int4"
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        assert torch.equal(back.module(input_ids=ids).logits, art.model.module(input_ids=ids).logits)


def test_pruned_zeros_stay_zero_while_the_rest_trains(tiny_bert, tmp_path):
    from compress.testing import write_tiny_bert

    # A pruned student far from the teacher (other random weights), so training improves on it and
    # the returned best weights are trained ones, not the starting point.
    other = write_tiny_bert(tmp_path / "other", seed=1)
    sparse = cz.prune(str(other), "unstructured", 0.5).save(tmp_path / "sparse")
    data = write_jsonl(tmp_path / "train.jsonl", n=64, labelled=False)
    training = {**QUICK, "epochs": 3, "lr": 3e-3}
    art = cz.distill(str(sparse), teacher=str(tiny_bert), data=str(data), training=training)
    assert art.stats["distill.record"]["best_step"] > 0
    before = cz.load(sparse).module.encoder.layer[0].intermediate.dense.weight
    after = art.model.module.encoder.layer[0].intermediate.dense.weight
    assert torch.equal(after == 0, before == 0)
    assert not torch.equal(after, before)
    assert art.stats["distill.record"]["sparse_weights_kept_sparse"] > 0


def test_bad_inputs_are_one_clear_sentence(tiny_bert, tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl")
    with pytest.raises(BadInput, match="'llama' model and the student a 'bert'"):
        cz.distill(str(tiny_bert), teacher=str(tiny_llama), data=str(data), training=QUICK)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(BadInput, match="holds no training samples"):
        cz.distill(teacher=str(tiny_bert), data=str(empty), student_layers=1, training=QUICK)
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n ")
    with pytest.raises(BadInput, match="is empty"):
        cz.distill(teacher=str(tiny_bert), data=str(blank), student_layers=1, training=QUICK)
    with pytest.raises(BadInput, match=r"'encoder\.layer\.7', which the teacher does not have"):
        cz.distill(
            teacher=str(tiny_bert),
            data=str(data),
            student_layers=1,
            training=QUICK,
            losses={"layer_pairs": ["encoder.layer.0:encoder.layer.7"]},
        )
    with pytest.raises(BadInput, match="no quantized layers"):
        cz.distill(str(tiny_bert), teacher=str(tiny_bert), data=str(data), qat=True, training=QUICK)
    with pytest.raises(BadInput, match="no logits"):
        cz.distill(teacher=str(tiny_bert), data=str(data), student_layers=1, losses={"kl": 1.0})
    with pytest.raises(BadInput, match="between 1 and 1"):
        cz.distill(teacher=str(tiny_bert), data=str(data), student_layers=2)
    with pytest.raises(BadInput, match="no checkpoint to resume from"):
        cz.distill(
            teacher=str(tiny_bert),
            data=str(data),
            student_layers=1,
            checkpoints={"dir": str(tmp_path / "none"), "resume": True},
        )
    with pytest.raises(BadInput, match="unknown setting 'epoch'"):
        cz.distill(teacher=str(tiny_bert), data=str(data), student_layers=1, training={"epoch": 2})


def test_cuda_is_reported_unavailable_not_silently_replaced(tiny_bert, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    data = write_jsonl(tmp_path / "train.jsonl")
    with pytest.raises(Unsupported, match="cuda is unavailable"):
        cz.distill(teacher=str(tiny_bert), data=str(data), student_layers=1, device="cuda", training=QUICK)
