"""Scoring the student against the teacher on the held-out validation samples (early stopping).

retention = student score / teacher score, as the evaluator defines it:
- labelled data, a model with logits: accuracy of the arg-max;
- labelled data, an encoder: accuracy of a linear probe fitted on the teacher's sentence embeddings
  of training samples (the evaluator's classification probe);
- no labels: the cosine of the student's outputs with the teacher's (fidelity; the teacher scores 1).
"""

from __future__ import annotations

from dataclasses import dataclass

PROBE_FIT_SAMPLES = 512  # teacher embeddings the validation probe is fitted on (a forward each)


@dataclass
class Score:
    metric: str
    value: float
    teacher: float
    retention: float

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "value": self.value,
            "teacher": self.teacher,
            "retention": self.retention,
        }


class Validator:
    def __init__(self, teacher, train_batcher, val_batcher, batch_size: int, encoder: bool, use_labels: bool):
        import torch

        self.teacher, self.val, self.batch_size = teacher, val_batcher, batch_size
        self.encoder = encoder
        self.labels = val_batcher.data.labels if use_labels else None
        self.probe = None
        with torch.no_grad():
            self.teacher_out = self._outputs(teacher, val_batcher, len(val_batcher.data))
            if self.labels is not None and encoder:
                from compress.eval.tasks import fit_probe

                n = min(len(train_batcher.data), PROBE_FIT_SAMPLES)
                fit = self._outputs(teacher, train_batcher, n)
                classes = _classes(train_batcher, val_batcher)
                self.probe = fit_probe(fit, train_batcher.data.labels[:n].tolist(), classes)
        self.metric = "cosine" if self.labels is None else ("probe accuracy" if encoder else "accuracy")
        self.teacher_value = 1.0 if self.labels is None else self._accuracy(self.teacher_out)

    def score(self, student) -> Score:
        import torch

        was_training = student.training
        student.eval()
        try:
            with torch.no_grad():
                out = self._outputs(student, self.val, len(self.val.data))
        finally:
            student.train(was_training)
        if self.labels is None:
            value = torch.nn.functional.cosine_similarity(out, self.teacher_out, dim=-1).mean().item()
        else:
            value = self._accuracy(out)
        retention = value / self.teacher_value if self.teacher_value else 0.0
        return Score(self.metric, value, self.teacher_value, retention)

    def _accuracy(self, features) -> float:
        from compress.eval.tasks import predict

        predicted = predict(self.probe, features) if self.probe is not None else features.argmax(-1).tolist()
        truth = self.labels.tolist()
        return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)

    def _outputs(self, module, batcher, n: int):
        """Per sample: mean-pooled normalised embeddings (encoders) or the flattened main output."""
        import torch

        from compress.eval.calls import call_module, main_output
        from compress.passes.distill.losses import mean_pool

        rows = []
        for start in range(0, n, self.batch_size):
            batch = batcher(list(range(start, min(start + self.batch_size, n))))
            out = main_output(call_module(module, batch.inputs)).float()
            if self.encoder:
                out = torch.nn.functional.normalize(mean_pool(out, batch.mask), dim=-1)
            elif self.labels is None and batch.mask is not None and out.dim() == 3:
                out = mean_pool(out, batch.mask)  # a language model: one vector per sample
            rows.append(out.reshape(out.shape[0], -1).cpu())
        return torch.cat(rows)


def _classes(*batchers) -> int:
    return max(int(b.data.labels.max()) for b in batchers) + 1
