"""Training data for distillation: texts (with labels when the data has them) or tensors from an .npz.

- a built-in name: `spam` (its train half, labelled; the test half that the evaluator scores is
  never trained on), `wiki-train` or `wiki` (plain text);
- a .txt file: split into passages at blank lines, long ones cut into pieces of `max_length` words;
- a .jsonl or .csv file: one sample per row from its `text` column, labelled when it has a `label`
  column; rows with a `split` column other than `train` are left out;
- an .npz file: its `pixel_values` or `inputs` array (else the first one) and, if there, `labels`.

A seeded fraction is held out for validation (early stopping); it is never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import BadInput


@dataclass
class TrainingSet:
    source: str
    inputs: Any  # list[str] of texts, or a tensor [n, ...]
    labels: Any | None = None  # LongTensor [n] or None
    notes: list[str] = field(default_factory=list)

    @property
    def is_text(self) -> bool:
        return isinstance(self.inputs, list)

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: list[int]) -> TrainingSet:
        inputs = [self.inputs[i] for i in indices] if self.is_text else self.inputs[indices]
        labels = self.labels[indices] if self.labels is not None else None
        return TrainingSet(self.source, inputs, labels)

    def split(self, fraction: float, seed: int, cap: int) -> tuple[TrainingSet, TrainingSet]:
        """(train, validation): a seeded `fraction` (at most `cap`, at least one) held out."""
        import torch

        n = len(self)
        held = min(max(1, round(n * fraction)), cap)
        if n - held < 1:
            raise BadInput(
                f"{self.source}: has {n} samples; need at least 2 (one to train, one to validate)."
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        return self.subset(sorted(order[held:])), self.subset(sorted(order[:held]))

    def describe(self) -> dict:
        return {"source": self.source, "samples": len(self), "labelled": self.labels is not None}


def load_training_data(source: str, max_length: int) -> TrainingSet:
    """Read the training samples of `source` (see the module docstring); BadInput when there are none."""
    from compress.eval.data import BUILTIN, BUILTIN_TEXT, load_labelled, load_text

    name = str(source)
    if not name:
        raise BadInput(
            "distill.data: give training data (a text file, .jsonl/.csv, .npz, or spam/wiki-train)."
        )
    if name in BUILTIN:
        labelled = load_labelled(name)
        data = _texts(f"{name} (built-in, train half)", labelled.train_texts, labelled.train_labels)
        data.notes.append(f"trained on the train half of {name}; its test half is what the evaluator scores")
        return data
    if name.endswith(".npz"):
        return _from_npz(Path(name))
    if name in BUILTIN_TEXT or name.endswith(".txt"):
        return _texts(name, passages(load_text(name), max_length), None)
    path = Path(name)
    if not path.exists():
        raise BadInput(f"{path}: no such training data file.")
    return _from_rows(path)


def passages(text: str, words: int) -> list[str]:
    """Paragraphs (split at blank lines), long ones cut into pieces of at most `words` words."""
    out = []
    for paragraph in text.split("\n\n"):
        tokens = paragraph.split()
        out += [" ".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]
    return out


def _texts(source: str, texts: list[str], labels: list | None) -> TrainingSet:
    import torch

    keep = [i for i, t in enumerate(texts) if t.strip()]
    if not keep:
        raise BadInput(f"{source}: holds no training samples (no non-empty text).")
    label_tensor = torch.tensor([labels[i] for i in keep], dtype=torch.long) if labels is not None else None
    return TrainingSet(source, [texts[i] for i in keep], label_tensor)


def _from_rows(path: Path) -> TrainingSet:
    from compress.eval.data import _read_rows

    rows = _read_rows(path)
    notes = []
    if rows and all("split" in r for r in rows):
        rows = [r for r in rows if r["split"] == "train"]
        notes.append(f"{path}: trained on the rows whose split is 'train'")
    if not rows:
        raise BadInput(f"{path}: holds no training samples.")
    if "text" not in rows[0]:
        raise BadInput(f"{path}: has no 'text' column (columns: {', '.join(rows[0])}).")
    labels = None
    if "label" in rows[0]:
        names = sorted({str(r["label"]) for r in rows})
        labels = [names.index(str(r["label"])) for r in rows]
    data = _texts(str(path), [str(r["text"]) for r in rows], labels)
    data.notes += notes
    return data


def _from_npz(path: Path) -> TrainingSet:
    import numpy as np
    import torch

    if not path.exists():
        raise BadInput(f"{path}: no such training data file.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError) as exc:
        raise BadInput(f"{path}: is not a readable .npz file ({exc}).") from None
    key = next((k for k in ("pixel_values", "inputs") if k in arrays), None)
    key = key or next((k for k in arrays if k != "labels"), None)
    if key is None or arrays[key].ndim < 1 or len(arrays[key]) == 0:
        raise BadInput(f"{path}: holds no training samples.")
    inputs = torch.from_numpy(np.ascontiguousarray(arrays[key])).float()
    labels = None
    if "labels" in arrays:
        labels = torch.from_numpy(np.asarray(arrays["labels"])).long()
        if len(labels) != len(inputs):
            raise BadInput(f"{path}: has {len(labels)} labels for {len(inputs)} samples.")
    return TrainingSet(str(path), inputs, labels)
