"""The accuracy tasks on tiny, hand-checkable inputs: head and array classification, embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import compress as cz
from compress.errors import BadInput
from compress.eval.classify import ArrayClassification, HeadClassification, map_labels
from compress.eval.embedding import Embedding, rankdata, spearman
from compress.eval.tasks import TaskOptions, pick_task
from compress.model import Model
from compress.testing import write_tiny_bert_classifier

TEXTS = ["free money now", "the team meeting is today", "click to win cash", "please fix the bug", "a report"]


class ArgmaxOfInput(nn.Module):
    """Class scores are the input itself: the prediction is the input's largest column."""

    def forward(self, x):
        return x


def test_rank_correlation_by_hand():
    assert rankdata([10, 20, 20, 30]) == [1.0, 2.5, 2.5, 4.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks [1,2,3] vs [1,3,2]: 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_array_classification_counts_correct_argmax(tmp_path):
    x = np.eye(4, dtype="float32")[[0, 1, 2, 3]]  # predictions 0, 1, 2, 3
    np.savez(tmp_path / "d.npz", images=x, labels=np.array([0, 1, 2, 0]))
    task = ArrayClassification(str(tmp_path / "d.npz"))
    model = Model(module=ArgmaxOfInput(), family="module")
    result = task.run(model, model)
    assert result.value == result.baseline == 0.75 and result.retention == 1.0
    # class 0: tp1 fp0 fn1 -> 2/3; 1, 2: 1.0; 3: tp0 fp1 fn0 -> 0
    assert result.details["macro_f1"] == pytest.approx((2 / 3 + 1 + 1 + 0) / 4)
    assert result.details["prediction_agreement"] == 1.0


def test_array_classification_bad_inputs(tmp_path):
    model = Model(module=ArgmaxOfInput(), family="module")
    np.savez(tmp_path / "big.npz", x=np.eye(3, dtype="float32"), y=np.array([0, 1, 7]))
    with pytest.raises(BadInput, match="labels do not match its head"):
        ArrayClassification(str(tmp_path / "big.npz")).run(model, model)
    np.savez(tmp_path / "nolabels.npz", x=np.eye(3, dtype="float32"))
    with pytest.raises(BadInput, match="no integer label array"):
        ArrayClassification(str(tmp_path / "nolabels.npz"))
    np.savez(tmp_path / "count.npz", x=np.eye(3, dtype="float32"), y=np.array([0, 1]))
    with pytest.raises(BadInput, match="has 3 rows but 'y' has 2 labels"):
        ArrayClassification(str(tmp_path / "count.npz"))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BadInput, match=r"not a readable \.npz"):
        ArrayClassification(str(tmp_path / "broken.npz"))


def test_vision_module_npz_through_evaluate(tmp_path):
    from compress.testing import tiny_cnn

    cnn = tiny_cnn()
    x = torch.randn(12, 1, 16, 16)
    labels = cnn(x).argmax(-1).detach().numpy()  # the baseline's own predictions: accuracy 1 by design
    np.savez(tmp_path / "v.npz", x=x.numpy(), y=labels)
    report = cz.evaluate(cz.quantize(cnn, scheme="int8"), cnn, data=str(tmp_path / "v.npz"), devices=())
    assert report.accuracy.task == "classification" and report.accuracy.baseline == 1.0
    assert 0.8 <= report.accuracy.value <= 1.0
    assert "labelled arrays given" in report.notes[-1]


def test_label_mapping_by_name_or_id():
    assert map_labels(["spam", "HAM", "spam"], ["ham", "spam"], "d") == [1, 0, 1]
    assert map_labels(["1", "0"], ["LABEL_0", "LABEL_1"], "d") == [1, 0]
    with pytest.raises(
        BadInput, match=r"labels \['maybe'\] do not match the model's head \(2 classes: ham, spam\)"
    ):
        map_labels(["ham", "maybe"], ["ham", "spam"], "d")
    with pytest.raises(BadInput, match="do not match"):
        map_labels(["0", "2"], ["ham", "spam"], "d")


@pytest.fixture
def tiny_classifier(tmp_path):
    return write_tiny_bert_classifier(tmp_path / "clf")


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_head_classification_scores_the_heads_own_predictions(tiny_classifier, tmp_path):
    model = cz.load(tiny_classifier)
    batch = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        predicted = model.module(**batch).logits.argmax(-1).tolist()
    names = ["ham", "spam"]
    pairs = list(zip(TEXTS, predicted, strict=True))
    right = _write_jsonl(tmp_path / "r.jsonl", [{"text": t, "label": names[p]} for t, p in pairs])
    wrong = _write_jsonl(tmp_path / "w.jsonl", [{"text": t, "label": names[1 - p]} for t, p in pairs])
    assert HeadClassification(str(right)).run(model, model).value == 1.0
    assert HeadClassification(str(wrong)).run(model, model).value == 0.0
    task, why = pick_task(model, "auto", str(right))
    assert isinstance(task, HeadClassification) and "classification head" in why
    fidelity, why = pick_task(model, "auto")
    assert fidelity.name == "fidelity" and "no labelled data" in why


def test_embedding_task_agreement_and_human_scores(tiny_bert, tmp_path):
    base = cz.load(tiny_bert)
    same = Embedding(None, limit=8).run(base, base)
    assert same.value == pytest.approx(1.0, abs=1e-5) and same.details["pairwise_spearman"] == pytest.approx(
        1.0
    )
    int4 = cz.quantize(base, scheme="int4", group_size=16).model
    moved = Embedding(None, limit=8).run(base, int4)
    # The tiny random BERT's mean-pooled output is dominated by its embeddings and residual path: even
    # zeroing every Linear weight leaves an agreement of 0.99897 (rows permuted: 0.99824). INT4 g16
    # measured 0.99998, so the bound sits between: a broken quantizer fails it, rounding noise does not.
    assert 0.9999 < moved.value < 1.0 and moved.details["cosine_min"] <= moved.value
    # Human scores that are exactly the baseline's own similarities: its Spearman is 1 by construction.
    from compress.eval.text import sentence_embeddings

    pairs = [(TEXTS[i], TEXTS[j]) for i in range(5) for j in range(i + 1, 5)]
    emb = dict(zip(TEXTS, sentence_embeddings(base, TEXTS), strict=False))
    rows = [{"text1": a, "text2": b, "score": float(emb[a] @ emb[b])} for a, b in pairs]
    scored = Embedding(str(_write_jsonl(tmp_path / "sim.jsonl", rows))).run(base, int4)
    assert scored.metric == "spearman" and scored.baseline == pytest.approx(1.0)
    assert scored.retention == pytest.approx(scored.value) and scored.details["n_pairs"] == 10


def test_embedding_task_needs_texts_and_an_encoder(tiny_llama, tmp_path):
    _write_jsonl(tmp_path / "one.jsonl", [{"text": "only one"}])
    with pytest.raises(BadInput, match="at least two texts"):
        Embedding(str(tmp_path / "one.jsonl"))
    _write_jsonl(tmp_path / "cols.jsonl", [{"sentence": "a"}, {"sentence": "b"}])
    with pytest.raises(BadInput, match="neither a 'text' column"):
        Embedding(str(tmp_path / "cols.jsonl"))
    llama = cz.load(tiny_llama)
    with pytest.raises(BadInput, match="needs an encoder"):
        Embedding(None, limit=4).run(llama, llama)


def test_task_options_are_strict_and_reach_perplexity(tiny_llama):
    with pytest.raises(BadInput, match="unknown setting 'windw'"):
        TaskOptions.from_dict({"windw": 64})
    with pytest.raises(BadInput, match="window must be at least 1"):
        TaskOptions(window=0).validate()
    task, why = pick_task(
        cz.load(tiny_llama), "auto", options=TaskOptions(window=32, stride=8, max_tokens=100)
    )
    assert (task.window, task.stride, task.max_tokens) == (32, 8, 100)
    assert "picked 'causal-lm'" in why
    with pytest.raises(BadInput, match="unknown task 'accuracy'"):
        pick_task(cz.load(tiny_llama), "accuracy")


def test_the_token_limit_follows_the_model_unless_set(tiny_bert, tmp_path, minilm):
    from compress.eval.text import token_limit

    bert = cz.load(tiny_bert)
    assert token_limit(bert) == (160, "config max_position_embeddings")  # not a silent 128
    assert token_limit(bert, 32) == (32, "as set")
    bert.tokenizer.model_max_length = 100  # a tokenizer that states a tighter limit wins
    assert token_limit(bert) == (100, "tokenizer model_max_length")
    (tiny_bert.parent / "sentence_bert_config.json").write_text('{"max_seq_length": 64}')
    assert token_limit(cz.load(tiny_bert)) == (64, "sentence_bert_config.json max_seq_length")
    assert token_limit(cz.load(minilm))[0] == 256  # what all-MiniLM-L6-v2 was trained with
    assert token_limit(Model(module=nn.Linear(2, 2), family="module")) == (
        512,
        "no limit stated by the model (default)",
    )


def test_text_tasks_record_the_token_limit_they_used(tiny_bert, tiny_classifier, tmp_path):
    import compress.eval.tasks as tasks_module
    import compress.eval.text as text
    from compress.eval.data import load_labelled
    from compress.eval.tasks import Fidelity, ProbeClassification

    bert = cz.load(tiny_bert)
    seen = []

    tokenize = text.tokenize

    def spy(model, texts, max_length):
        seen.append(max_length)
        return tokenize(model, texts, max_length)

    with pytest.MonkeyPatch.context() as patch:
        for module in (text, tasks_module):
            patch.setattr(module, "tokenize", spy)
        probe = ProbeClassification(load_labelled("spam", limit=8)).run(bert, bert)
        embedding = Embedding(None, limit=4).run(bert, bert)
        fidelity = Fidelity(texts=TEXTS).run(bert, bert)
    assert set(seen) == {160}
    for result in (probe, embedding, fidelity):
        assert (result.details["max_length"], result.details["max_length_from"]) == (
            160,
            "config max_position_embeddings",
        )
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": "spam"}) + "\n" for t in TEXTS))
    head = HeadClassification(str(path), max_length=16).run(
        cz.load(tiny_classifier), cz.load(tiny_classifier)
    )
    assert (head.details["max_length"], head.details["max_length_from"]) == (16, "as set")
