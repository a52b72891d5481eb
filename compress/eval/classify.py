"""Classification with the model's own head: texts through a `*ForSequenceClassification` model
(labels mapped through its config's label2id), or arrays from an .npz file through any module
whose output is one score per class (vision models)."""

from __future__ import annotations

from compress.errors import BadInput
from compress.eval.accuracy import AccuracyResult, Task, accuracy_and_f1
from compress.eval.calls import call_module, main_output
from compress.eval.data import load_arrays, read_rows
from compress.eval.text import token_limit, tokenize
from compress.model import Model


def head_labels(config) -> list[str]:
    """The head's label names in id order (config.id2label)."""
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(id2label, key=int)]


def map_labels(raw: list[str], names: list[str], where: str) -> list[int]:
    """Label strings to head ids: by name (label2id), or as integer ids within the head's range."""
    by_name = {n.lower(): i for i, n in enumerate(names)}
    if all(r.lower() in by_name for r in raw):
        return [by_name[r.lower()] for r in raw]
    if all(r.strip().lstrip("-").isdigit() for r in raw):
        ids = [int(r) for r in raw]
        if all(0 <= i < len(names) for i in ids):
            return ids
    unknown = sorted({r for r in raw if r.lower() not in by_name})[:5]
    raise BadInput(
        f"{where}: labels {unknown} do not match the model's head ({len(names)} classes: "
        f"{', '.join(names)}); use those names or ids 0..{len(names) - 1}."
    )


class _Scored(Task):
    name = "classification"
    metric = "accuracy"

    def scored(self, base_pred, cand_pred, truth, num_classes: int, details: dict) -> AccuracyResult:
        base_acc, base_f1 = accuracy_and_f1(base_pred, truth, num_classes)
        cand_acc, cand_f1 = accuracy_and_f1(cand_pred, truth, num_classes)
        agreement = sum(a == b for a, b in zip(base_pred, cand_pred, strict=True)) / len(truth)
        return self.result(
            cand_acc,
            base_acc,
            {
                **details,
                "n_scored": len(truth),
                "macro_f1": cand_f1,
                "baseline_macro_f1": base_f1,
                "prediction_agreement": agreement,
            },
        )


class HeadClassification(_Scored):
    """Accuracy and macro-F1 of a text classifier's own head on labelled texts."""

    def __init__(
        self,
        source: str,
        *,
        text_column: str = "text",
        label_column: str = "label",
        limit: int | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
    ):
        self.label, rows = read_rows(source, (text_column, label_column))
        if all("split" in r for r in rows) and any(r["split"] == "test" for r in rows):
            rows = [r for r in rows if r["split"] == "test"]  # the head was trained; score held-out rows
        rows = rows[:limit] if limit else rows
        self.texts = [str(r[text_column]) for r in rows]
        self.raw_labels = [str(r[label_column]) for r in rows]
        self.max_length, self.batch_size = max_length, batch_size

    def predictions(self, model: Model, max_length: int, progress=None) -> list[int]:
        import torch

        out: list[int] = []
        with torch.inference_mode():
            for start in range(0, len(self.texts), self.batch_size):
                batch = tokenize(model, self.texts[start : start + self.batch_size], max_length)
                out += main_output(model.module(**batch)).argmax(-1).tolist()
                if progress:
                    progress.advance(len(batch["input_ids"]))
        return out

    def run(self, baseline: Model, candidate: Model, progress=None) -> AccuracyResult:
        names = head_labels(baseline.config)
        truth = map_labels(self.raw_labels, names, self.label)
        if progress:
            progress.start("classifying", total=2 * len(self.texts))
        tokens, source = token_limit(baseline, self.max_length)
        base_pred = self.predictions(baseline, tokens, progress)
        cand_pred = self.predictions(candidate, tokens, progress)
        if progress:
            progress.done()
        details = {"dataset": self.label, "labels": names, "scorer": "the model's classification head"}
        details |= {"max_length": tokens, "max_length_from": source}
        return self.scored(base_pred, cand_pred, truth, len(names), details)


class ArrayClassification(_Scored):
    """Accuracy of a module's class scores on arrays from an .npz file (images and integer labels)."""

    def __init__(self, source: str, *, limit: int | None = None, batch_size: int = 64):
        self.inputs, self.labels, self.label = load_arrays(source, limit)
        self.batch_size = batch_size

    def predictions(self, model: Model) -> tuple[list[int], int]:
        import torch

        preds: list[int] = []
        classes = 0
        with torch.inference_mode():
            for start in range(0, len(self.inputs), self.batch_size):
                try:
                    scores = main_output(
                        call_module(model.module, self.inputs[start : start + self.batch_size])
                    )
                except RuntimeError as exc:
                    raise BadInput(
                        f"{self.label}: the model cannot take these inputs ({str(exc).splitlines()[0]})."
                    ) from None
                classes = scores.shape[-1]
                preds += scores.reshape(len(scores), -1).argmax(-1).tolist()
        return preds, classes

    def run(self, baseline: Model, candidate: Model, progress=None) -> AccuracyResult:
        base_pred, classes = self.predictions(baseline)
        top = int(self.labels.max())
        if int(self.labels.min()) < 0 or top >= classes:
            raise BadInput(
                f"{self.label}: labels run from {int(self.labels.min())} to {top}, but the model gives "
                f"{classes} class scores; the labels do not match its head."
            )
        cand_pred, _ = self.predictions(candidate)
        details = {"dataset": self.label, "classes": classes, "scorer": "argmax of the model's output"}
        return self.scored(base_pred, cand_pred, self.labels.tolist(), classes, details)
