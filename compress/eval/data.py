"""Labelled evaluation data: the built-in spam set, or the user's JSONL / CSV file."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from compress.errors import BadInput

BUILTIN = {"spam": "spam.jsonl.gz"}
# Built-in plain text: name -> (file, split). Evaluation text and calibration text never overlap.
BUILTIN_TEXT = {"wiki": ("wiki.jsonl.gz", "test"), "wiki-train": ("wiki.jsonl.gz", "train")}


@dataclass
class LabelledTexts:
    """Texts with integer labels, split into a part to fit a probe on and a part to score."""

    name: str
    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    label_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


def load_labelled(
    source: str | Path = "spam",
    *,
    text_column: str = "text",
    label_column: str = "label",
    limit: int | None = None,
) -> LabelledTexts:
    """Load labelled texts from a built-in name or a .jsonl/.csv file.

    Rows may carry a `split` column (train/test); otherwise half of the rows, chosen by a hash of
    the text so the choice is stable, fit the probe and the other half are scored. `limit` caps
    each split (for quick runs).
    """
    label, rows = read_rows(source, (text_column, label_column))
    texts = [str(r[text_column]) for r in rows]
    raw_labels = [str(r[label_column]) for r in rows]
    names = sorted(set(raw_labels))
    if len(names) < 2:
        raise BadInput(f"{label}: needs at least two distinct labels in '{label_column}', found {names}.")
    index = {n: i for i, n in enumerate(names)}
    if all("split" in r for r in rows):
        is_train = [r["split"] == "train" for r in rows]
    else:
        is_train = [int(hashlib.sha256(t.encode()).hexdigest(), 16) % 2 == 0 for t in texts]
    train = [(t, index[lab]) for t, lab, tr in zip(texts, raw_labels, is_train, strict=True) if tr]
    test = [(t, index[lab]) for t, lab, tr in zip(texts, raw_labels, is_train, strict=True) if not tr]
    if limit is not None:  # rows spread evenly, not the first ones: data files are often sorted by label
        train, test = (
            [rows[i * len(rows) // limit] for i in range(limit)] if len(rows) > limit else rows
            for rows in (train, test)
        )
    if not train or not test:
        raise BadInput(f"{label}: too few rows to split into a probe-fitting part and a scored part.")
    return LabelledTexts(
        name=label,
        train_texts=[t for t, _ in train],
        train_labels=[y for _, y in train],
        test_texts=[t for t, _ in test],
        test_labels=[y for _, y in test],
        label_names=names,
    )


def read_rows(source: str | Path, columns: tuple[str, ...]) -> tuple[str, list[dict]]:
    """(a label for messages, the rows) of a built-in set or a .jsonl/.csv file that has `columns`."""
    name = str(source)
    if name in BUILTIN:
        path = resources.files("compress.data").joinpath(BUILTIN[name])
        with resources.as_file(path) as real:
            rows = _read_jsonl(Path(real), name)
        label = f"{name} (built-in)"
    else:
        path = Path(name)
        if not path.exists():
            known = ", ".join(BUILTIN)
            raise BadInput(f"{path}: no such data file (built-in data sets: {known}).")
        rows = _read_rows(path)
        label = str(path)
    if not rows:
        raise BadInput(f"{label}: has no rows.")
    for column in columns:
        if column not in rows[0]:
            raise BadInput(f"{label}: has no '{column}' column (columns: {', '.join(rows[0])}).")
    return label, rows


def load_text(source: str | Path = "wiki", *, text_column: str = "text") -> str:
    """Plain text from a built-in name (wiki: evaluation half, wiki-train: calibration half), a .txt
    file, or the text column of a .jsonl/.csv file; documents are joined by blank lines."""
    name = str(source)
    if name in BUILTIN_TEXT:
        file, split = BUILTIN_TEXT[name]
        with resources.as_file(resources.files("compress.data").joinpath(file)) as real:
            rows = [r for r in _read_jsonl(Path(real), name) if r.get("split") == split]
        return "\n\n".join(r["text"] for r in rows)
    path = Path(name)
    if not path.exists():
        known = ", ".join(BUILTIN_TEXT)
        raise BadInput(f"{path}: no such text file (built-in texts: {known}).")
    if path.suffix == ".txt":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (UnicodeDecodeError, OSError) as exc:
            raise BadInput(f"{path}: cannot be read as UTF-8 text ({exc}).") from None
    else:
        rows = _read_rows(path)
        if rows and text_column not in rows[0]:
            raise BadInput(f"{path}: has no '{text_column}' column (columns: {', '.join(rows[0])}).")
        text = "\n\n".join(str(r[text_column]) for r in rows)
    if not text.strip():
        raise BadInput(f"{path}: is empty.")
    return text


def _read_rows(path: Path) -> list[dict]:
    suffixes = path.suffixes
    if suffixes[-2:] == [".jsonl", ".gz"] or path.suffix == ".jsonl":
        return _read_jsonl(path, str(path))
    if path.suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a BOM (Excel's) is not data
                return list(csv.DictReader(f))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise BadInput(f"{path}: is not a readable CSV file ({exc}).") from None
    raise BadInput(f"{path}: unknown data format '{path.suffix}'; use .jsonl or .csv.")


def _read_jsonl(path: Path, label: str) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise BadInput(f"{label}: line {number} is not valid JSON.") from None
                if not isinstance(row, dict):
                    raise BadInput(f"{label}: line {number} is not a JSON object.")
                rows.append(row)
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise BadInput(f"{label}: cannot be read ({exc}).") from None
    return rows


INPUT_KEYS = ("x", "images", "inputs", "data", "x_test")
LABEL_KEYS = ("y", "labels", "targets", "y_test")


def load_arrays(path: str | Path, limit: int | None = None):
    """(inputs, labels, description) from an .npz file: inputs under x/images/inputs/data, integer
    labels under y/labels/targets (else the first float and the first integer array)."""
    import zipfile

    import numpy as np
    import torch

    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such data file.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{path}: is not a readable .npz file ({exc}).") from None

    def pick(keys: tuple[str, ...], kind: str, what: str) -> str:
        for key in keys:
            if key in arrays:
                return key
        for key, value in arrays.items():
            if value.dtype.kind in kind:
                return key
        raise BadInput(f"{path}: has no {what} array (arrays: {', '.join(arrays) or 'none'}).")

    x_key = pick(INPUT_KEYS, "f", "input")
    y_key = pick(LABEL_KEYS, "iu", "integer label")
    x, y = arrays[x_key], arrays[y_key]
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise BadInput(f"{path}: '{y_key}' must be a 1-D array of integer labels, not {y.dtype} {y.shape}.")
    if len(x) == 0:
        raise BadInput(f"{path}: '{x_key}' is empty.")
    if len(x) != len(y):
        raise BadInput(f"{path}: '{x_key}' has {len(x)} rows but '{y_key}' has {len(y)} labels.")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    inputs = torch.from_numpy(np.ascontiguousarray(x)).float()
    return inputs, torch.from_numpy(y.astype("int64")), f"{path} ({x_key}: {list(x.shape)}, {y_key})"
