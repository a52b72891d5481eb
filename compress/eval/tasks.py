"""Accuracy tasks: each scores baseline and candidate the same way and gives a retention ratio.

retention = candidate / baseline for higher-is-better metrics (baseline / candidate otherwise).
"""

from __future__ import annotations

from compress.errors import BadInput
from compress.eval.accuracy import (
    AccuracyResult,
    Task,
    TaskOptions,
    accuracy_and_f1,
    fit_probe,
    predict,
    retention,
)
from compress.eval.calls import call_module, main_output
from compress.eval.data import LabelledTexts, load_labelled, load_text
from compress.eval.text import require_tokenizer, sentence_embeddings, token_limit, tokenize
from compress.model import Model

__all__ = ["TASKS", "AccuracyResult", "Task", "TaskOptions", "accuracy_and_f1", "pick_task", "retention"]


class ProbeClassification(Task):
    """Accuracy of a linear probe fitted on the baseline's sentence embeddings.

    Both models are scored with the same probe on the same held-out texts, each with its own
    embeddings: the candidate loses accuracy exactly where compression moved its embeddings.
    """

    name = "classification"
    metric = "accuracy"

    def __init__(
        self, data: LabelledTexts | None = None, max_length: int | None = None, batch_size: int = 32
    ):
        self.data = data or load_labelled("spam")
        self.max_length = max_length  # None: the model's own limit (eval.text.token_limit)
        self.batch_size = batch_size
        self.tokens: tuple[int, str] = (0, "")
        self._baseline: tuple | None = None  # (model, train, test embeddings): reused by a sweep

    def _embed(self, model: Model, texts: list[str], progress):
        return sentence_embeddings(
            model, texts, batch_size=self.batch_size, max_length=self.tokens[0], progress=progress
        )

    def run(self, baseline: Model, candidate: Model, progress=None) -> AccuracyResult:
        d = self.data
        self.tokens = token_limit(baseline, self.max_length)
        known = self._baseline is not None and self._baseline[0] is baseline
        if progress:
            todo = len(d.test_texts) + (0 if known else len(d.train_texts) + len(d.test_texts))
            progress.start("embedding (probe fit + scoring)", total=todo)
        if not known:  # the same baseline again (a sweep): its embeddings are the same, not redone
            train = self._embed(baseline, d.train_texts, progress)
            self._baseline = (baseline, train, self._embed(baseline, d.test_texts, progress))
        _, train, base_test = self._baseline
        cand_test = self._embed(candidate, d.test_texts, progress)
        if progress:
            progress.done()
        probe = fit_probe(train, d.train_labels, d.num_classes)
        base_acc, base_f1 = accuracy_and_f1(predict(probe, base_test), d.test_labels, d.num_classes)
        cand_acc, cand_f1 = accuracy_and_f1(predict(probe, cand_test), d.test_labels, d.num_classes)
        cosine = (base_test * cand_test).sum(dim=1)
        return self.result(
            cand_acc,
            base_acc,
            {
                "dataset": d.name,
                "n_fit": len(d.train_texts),
                "n_scored": len(d.test_texts),
                "labels": d.label_names,
                "macro_f1": cand_f1,
                "baseline_macro_f1": base_f1,
                "probe": "one-vs-rest ridge regression on the baseline's mean-pooled embeddings",
                "embedding_cosine_mean": cosine.mean().item(),
                "embedding_cosine_min": cosine.min().item(),
                "max_length": self.tokens[0],
                "max_length_from": self.tokens[1],
            },
        )


class Fidelity(Task):
    """Agreement of the candidate's outputs with the baseline's on sample inputs; needs no labels.

    value: mean cosine similarity of the output vectors (per token for a language model, per
    sentence for an encoder). details: worst cosine, top-1 agreement (language models), KL divergence.
    """

    name = "fidelity"
    metric = "cosine"

    def __init__(
        self, texts: list[str] | None = None, max_length: int | None = None, batch_size: int = 8, inputs=None
    ):
        self.texts = texts
        self.inputs = inputs
        self.max_length = max_length
        self.batch_size = batch_size

    def run(self, baseline: Model, candidate: Model, progress=None) -> AccuracyResult:
        import torch

        tokens = token_limit(baseline, self.max_length)
        texts_used = self.inputs is None or baseline.family == "encoder"
        limits = {"max_length": tokens[0], "max_length_from": tokens[1]} if texts_used else {}
        if baseline.family == "encoder":
            texts = self.texts or load_labelled("spam", limit=64).test_texts
            b = sentence_embeddings(baseline, texts, max_length=tokens[0])
            c = sentence_embeddings(candidate, texts, max_length=tokens[0])
            cos = (b * c).sum(dim=1)
            details = {"cosine_min": cos.min().item(), "n": len(texts), "outputs": "sentence embeddings"}
            return self.result(cos.mean().item(), 1.0, {**details, **limits})
        b_out, c_out = self._outputs(baseline, candidate, tokens[0])
        cos = torch.nn.functional.cosine_similarity(b_out, c_out, dim=-1)
        details = {
            "cosine_min": cos.min().item(),
            "n": int(cos.numel()),
            "outputs": "last dimension",
            **limits,
        }
        if b_out.shape[-1] > 1:
            details["top1_agreement"] = (b_out.argmax(-1) == c_out.argmax(-1)).float().mean().item()
            logp_b = torch.log_softmax(b_out.double(), dim=-1)
            logp_c = torch.log_softmax(c_out.double(), dim=-1)
            details["kl"] = (logp_b.exp() * (logp_b - logp_c)).sum(-1).mean().item()
        return self.result(cos.mean().item(), 1.0, details)

    def _outputs(self, baseline: Model, candidate: Model, max_length: int):
        import torch

        with torch.inference_mode():
            if self.inputs is not None:
                outs = [main_output(call_module(m.module, self.inputs)) for m in (baseline, candidate)]
                return outs[0], outs[1]
            if baseline.tokenizer is None:
                raise BadInput("the fidelity task needs sample inputs for a model without a tokenizer.")
            texts = self.texts or load_labelled("spam", limit=16).test_texts
            outs_b, outs_c = [], []
            for start in range(0, len(texts), self.batch_size):
                batch = tokenize(baseline, texts[start : start + self.batch_size], max_length)
                keep = batch["attention_mask"].bool()
                outs_b.append(main_output(baseline.module(**batch))[keep].float())
                outs_c.append(main_output(candidate.module(**batch))[keep].float())
            return torch.cat(outs_b), torch.cat(outs_c)


class Perplexity(Task):
    """Perplexity of a causal language model on a text, with a sliding window.

    Windows of `window` tokens advance by `stride`; each token is scored once, with the context of
    its window (tokens that open a window without overlap are not scored). At most `max_tokens`
    tokens of the text are used, so a run takes minutes, not hours, on a CPU.
    """

    name = "causal-lm"
    metric = "perplexity"
    higher_is_better = False

    def __init__(
        self, text: str, source: str, window: int = 512, stride: int | None = None, max_tokens: int = 8192
    ):
        stride = stride or window
        if stride < 1 or stride > window:
            raise BadInput(f"causal-lm: stride {stride} must be between 1 and the window ({window}).")
        self.text, self.source = text, source
        self.window, self.stride, self.max_tokens = window, stride, max_tokens

    def token_ids(self, model: Model):
        import torch

        tok = require_tokenizer(model)
        ids = tok(self.text, add_special_tokens=False)["input_ids"][: self.max_tokens]
        if len(ids) < self.window:
            raise BadInput(
                f"{self.source}: has {len(ids)} tokens; one window needs {self.window} (give a longer text "
                "or a smaller window)."
            )
        return torch.tensor(ids, dtype=torch.long)

    def perplexity(self, model: Model, ids, progress=None) -> tuple[float, int]:
        import math

        import torch
        import torch.nn.functional as F

        nll, count, scored_until, begin = 0.0, 0, 0, 0
        with torch.inference_mode():
            while scored_until < len(ids) and len(ids) - begin >= 2:
                end = min(begin + self.window, len(ids))
                chunk = ids[begin:end][None]
                logits = main_output(model.module(input_ids=chunk))[0, :-1]
                targets = chunk[0, 1:]
                first_new = max(scored_until - begin - 1, 0)  # targets before it were scored already
                nll += F.cross_entropy(
                    logits[first_new:].float(), targets[first_new:], reduction="sum"
                ).item()
                count += len(targets) - first_new
                scored_until, begin = end, begin + self.stride
                if progress:
                    progress.advance()
        return math.exp(nll / count), count

    def run(self, baseline: Model, candidate: Model, progress=None) -> AccuracyResult:
        import time

        ids = self.token_ids(baseline)
        windows = max(1, -(-(len(ids) - self.window) // self.stride) + 1)
        if progress:
            progress.start("perplexity", total=2 * windows)
        started = time.perf_counter()
        base, count = self.perplexity(baseline, ids, progress)
        base_seconds = time.perf_counter() - started
        cand, _ = self.perplexity(candidate, ids, progress)
        cand_seconds = time.perf_counter() - started - base_seconds
        if progress:
            progress.done()
        return self.result(
            cand,
            base,
            {
                "text": self.source,
                "tokens_scored": count,
                "window": self.window,
                "stride": self.stride,
                "seconds": cand_seconds,
                "baseline_seconds": base_seconds,
            },
        )


TASKS = ("auto", "classification", "embedding", "causal-lm", "fidelity")


def _auto(baseline: Model, data: str | None) -> tuple[str, str]:
    family, has_tok = baseline.family, baseline.tokenizer is not None
    if data is not None and str(data).endswith(".npz"):
        return "classification", "labelled arrays given"
    if family == "encoder" and has_tok:
        return "classification", "a linear probe on its sentence embeddings"
    if family == "classifier" and has_tok and data is not None:
        return "classification", "its classification head on the labelled data"
    if family == "causal-lm" and has_tok:
        return "causal-lm", "perplexity"
    why = "no labelled data given for its head" if family == "classifier" else "output agreement, no labels"
    return "fidelity", why


def pick_task(
    baseline: Model,
    task: str = "auto",
    data: str | None = None,
    inputs=None,
    limit: int | None = None,
    options: TaskOptions | None = None,
) -> tuple[Task | None, str]:
    """The task to run, and a sentence saying what was picked and why (or why none)."""
    from compress.eval.classify import ArrayClassification, HeadClassification
    from compress.eval.embedding import Embedding

    o = options or TaskOptions()
    if task not in TASKS:
        raise BadInput(f"unknown task '{task}'; valid: {', '.join(TASKS)}.")
    if not baseline.runnable:
        if task != "auto" or data is not None:
            asked = " and ".join(([f"task '{task}'"] if task != "auto" else []) + (["data"] if data else []))
            raise BadInput(
                f"{baseline.name}: has no architecture to run (no config.json beside it, no --module), so "
                f"the {asked} asked for cannot be evaluated; name its class with --module "
                "FILE.py:ClassName, or leave them out."
            )
        return None, (
            "no architecture (config.json beside the checkpoint, or --module CLASS): accuracy and "
            "latency need one"
        )
    if task == "auto":
        task, reason = _auto(baseline, data)
        article = "an" if baseline.family[0] in "aeiou" else "a"
        why = f"task auto: picked '{task}' for {article} {baseline.family} model ({reason})"
    else:
        why = f"task '{task}' as asked"
    text = {"max_length": o.max_length, "batch_size": o.batch_size}
    if task == "classification":
        if data is not None and str(data).endswith(".npz"):
            return ArrayClassification(data, limit=limit, batch_size=o.batch_size), why
        if baseline.family == "classifier":
            if data is None:
                raise BadInput(
                    "classification with the model's own head needs labelled data (--data) whose labels "
                    "match the head."
                )
            columns = {"text_column": o.text_column, "label_column": o.label_column}
            return HeadClassification(data, limit=limit, **columns, **text), why
        if baseline.family != "encoder":
            raise BadInput(
                f"the classification task needs an encoder, a classifier or .npz arrays; this model is a "
                f"{baseline.family}."
            )
        labelled = load_labelled(
            data or "spam", text_column=o.text_column, label_column=o.label_column, limit=limit
        )
        return ProbeClassification(labelled, **text), why
    if task == "embedding":
        return Embedding(data, text_column=o.text_column, limit=limit, **text), why
    if task == "causal-lm":
        if baseline.family != "causal-lm":
            raise BadInput(
                f"the causal-lm task needs a causal language model; this model is a {baseline.family}."
            )
        source = data or "wiki"
        label = "wiki (built-in, test half)" if data is None else str(data)
        text_of = load_text(source, text_column=o.text_column)
        return Perplexity(text_of, label, window=o.window, stride=o.stride, max_tokens=o.max_tokens), why
    if inputs is None and baseline.tokenizer is None:
        return None, "fidelity needs sample inputs for a model without a tokenizer"
    return Fidelity(inputs=inputs, max_length=o.max_length), why
