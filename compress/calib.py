"""Calibration data for data-aware passes (GPTQ, AWQ, Wanda, static activation ranges).

Text (a built-in name, a .txt file, or the text column of a .jsonl/.csv file) is tokenized once and
`n_samples` windows of `seq_len` tokens are drawn with a seeded generator, so the same settings
always give the same samples. An .npz file gives ready tensors (its first array, split along the
first axis), for models that do not take text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import BadInput
from compress.eval.data import BUILTIN_TEXT, load_text

DEFAULT_SOURCE = "wiki-train"


@dataclass
class CalibrationData:
    """Model inputs to run for statistics: each sample is a dict of [1, seq_len] tensors or one tensor."""

    source: str
    samples: list[Any]
    seq_len: int | None
    seed: int
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self) -> dict:
        return {
            "source": self.source,
            "samples": len(self.samples),
            "seq_len": self.seq_len,
            "seed": self.seed,
        }


def load_calibration(
    source: str | Path = DEFAULT_SOURCE,
    *,
    tokenizer: Any = None,
    n_samples: int = 128,
    seq_len: int = 512,
    seed: int = 0,
) -> CalibrationData:
    """Draw calibration samples from `source`; BadInput when the data is too small for the request."""
    import torch

    if n_samples < 1 or seq_len < 2:
        raise BadInput(f"calibration: need n_samples >= 1 and seq_len >= 2 (got {n_samples}, {seq_len}).")
    name = str(source)
    if name.endswith(".npz"):
        return _from_npz(Path(name), n_samples, seed)
    if tokenizer is None:
        raise BadInput(f"calibration: text data ({name}) needs a model with a tokenizer.")
    text = load_text(name)
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    if len(ids) < seq_len:
        raise BadInput(f"{name}: has {len(ids)} tokens, fewer than one calibration sample of {seq_len}.")
    windows = len(ids) // seq_len
    generator = torch.Generator().manual_seed(seed)
    notes = []
    if windows >= n_samples:  # disjoint windows when the text allows it
        starts = (torch.randperm(windows, generator=generator)[:n_samples] * seq_len).tolist()
    else:
        notes.append(
            f"{name} holds {windows} disjoint windows of {seq_len} tokens; {n_samples} samples overlap"
        )
        starts = torch.randint(0, len(ids) - seq_len + 1, (n_samples,), generator=generator).tolist()
    samples = [
        {"input_ids": ids[s : s + seq_len][None], "attention_mask": torch.ones(1, seq_len, dtype=torch.long)}
        for s in starts
    ]
    label = f"{name} (built-in)" if name in BUILTIN_TEXT else name
    return CalibrationData(label, samples, seq_len, seed, notes)


def _from_npz(path: Path, n_samples: int, seed: int) -> CalibrationData:
    import numpy as np
    import torch

    if not path.exists():
        raise BadInput(f"{path}: no such calibration file.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not archive.files:
                raise BadInput(f"{path}: holds no arrays.")
            array = archive[archive.files[0]]
    except (ValueError, OSError) as exc:
        raise BadInput(f"{path}: is not a readable .npz file ({exc}).") from None
    if array.ndim < 1 or len(array) == 0:
        raise BadInput(f"{path}: its first array is empty.")
    order = torch.randperm(len(array), generator=torch.Generator().manual_seed(seed))[:n_samples]
    samples = [torch.from_numpy(np.ascontiguousarray(array[i : i + 1])) for i in order.tolist()]
    notes = (
        [] if len(array) >= n_samples else [f"{path} has {len(array)} samples, fewer than {n_samples} asked"]
    )
    return CalibrationData(str(path), samples, None, seed, notes)


def calibration_data(data: Any, model: Any, **options: Any) -> Any:
    """Data for a pass: a built-in name or a file is loaded (with `model`'s tokenizer, `options` as in
    load_calibration); CalibrationData, tensors or None are passed through as given."""
    if isinstance(data, str | Path):
        return load_calibration(data, tokenizer=getattr(model, "tokenizer", None), **options)
    return data
