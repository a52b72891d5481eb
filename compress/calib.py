"""Calibration data for data-aware passes (GPTQ, AWQ, Wanda, static activation ranges).

Text (a built-in name, a .txt file, or the text column of a .jsonl/.csv file) is tokenized once and
`n_samples` windows of `seq_len` tokens are drawn with a seeded generator, so the same settings
always give the same samples. An .npz file gives ready tensors, split along the first axis: one
array is the model's single input; several arrays are keyword inputs by name (input_ids,
attention_mask, ...), for pre-tokenized data or models that do not take text.

A pass that needs data declares `CalibrationSettings` (where the data comes from, how many samples,
how long); `resolve_calibration` turns those settings, or data given directly, into samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.config import Settings
from compress.errors import BadInput
from compress.eval.data import BUILTIN_TEXT, load_text

DEFAULT_SOURCE = "wiki-train"


@dataclass(frozen=True, kw_only=True)
class CalibrationSettings(Settings):
    """Where calibration data comes from and how much of it: recorded in the recipe of the output.

    source: a built-in text (wiki-train), a .txt/.jsonl/.csv file, or an .npz of ready tensors.
    samples: number of samples drawn; seq_len: tokens per text sample; seed: which windows are drawn.
    """

    source: str = DEFAULT_SOURCE
    samples: int = 128
    seq_len: int = 512
    seed: int = 0

    def validate(self) -> None:
        if self.samples < 1:
            raise BadInput(f"calibration samples: need at least 1 (got {self.samples}).")
        if self.seq_len < 2:
            raise BadInput(f"calibration seq_len: need at least 2 tokens (got {self.seq_len}).")


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

    def batches(self, batch_size: int) -> list[Any]:
        """Samples stacked along the first axis, `batch_size` at a time, where their shapes agree."""
        import torch

        out: list[Any] = []
        for start in range(0, len(self.samples), batch_size):
            chunk = self.samples[start : start + batch_size]
            if isinstance(chunk[0], dict):
                keys = chunk[0].keys()
                if all(
                    s.keys() == keys and all(s[k].shape == chunk[0][k].shape for k in keys) for s in chunk
                ):
                    out.append({k: torch.cat([s[k] for s in chunk]) for k in keys})
                else:
                    out.extend(chunk)
            elif all(s.shape == chunk[0].shape for s in chunk):
                out.append(torch.cat(chunk))
            else:
                out.extend(chunk)
        return out


def resolve_calibration(data: Any, settings: CalibrationSettings, tokenizer: Any = None) -> CalibrationData:
    """Calibration samples from data given directly (CalibrationData, a path or built-in name, a tensor
    or a list of samples) or, when `data` is None, from `settings.source`."""
    import torch

    if isinstance(data, CalibrationData):
        return data
    if data is None or isinstance(data, str | Path):
        source = settings.source if data is None else data
        return load_calibration(
            source,
            tokenizer=tokenizer,
            n_samples=settings.samples,
            seq_len=settings.seq_len,
            seed=settings.seed,
        )
    if isinstance(data, torch.Tensor):
        if data.dim() < 1 or len(data) == 0:
            raise BadInput("calibration: the tensor given as data is empty.")
        samples: list[Any] = list(data.split(1))
    elif isinstance(data, list | tuple):
        samples = list(data)
    else:
        raise BadInput(
            f"calibration: cannot use a {type(data).__name__} as data; give a path, a built-in name, "
            "a tensor or a list of samples."
        )
    if not samples:
        raise BadInput("calibration: the list of samples given as data is empty.")
    if not all(isinstance(s, torch.Tensor | dict) for s in samples):
        raise BadInput("calibration: each sample must be a tensor or a dict of tensors.")
    return CalibrationData("samples given in memory", samples, None, settings.seed)


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
    # The whole text at once: longer than the model takes, on purpose (it is cut into windows).
    ids = torch.tensor(
        tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=torch.long
    )
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
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError) as exc:
        raise BadInput(f"{path}: is not a readable .npz file ({exc}).") from None
    lengths = {name: (len(a) if a.ndim else 0) for name, a in arrays.items()}
    if any(n == 0 for n in lengths.values()):
        empty = next(name for name, n in lengths.items() if n == 0)
        raise BadInput(f"{path}: its array '{empty}' is empty.")
    if len(set(lengths.values())) > 1:
        raise BadInput(
            f"{path}: its arrays have different numbers of samples ({lengths}); keyword inputs must agree."
        )
    count = next(iter(lengths.values()))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n_samples].tolist()

    def take(a, i):
        return torch.from_numpy(np.ascontiguousarray(a[i : i + 1]))

    if len(arrays) == 1:
        only = next(iter(arrays.values()))
        samples: list[Any] = [take(only, i) for i in order]
    else:
        samples = [{name: take(a, i) for name, a in arrays.items()} for i in order]
    notes = [] if count >= n_samples else [f"{path} has {count} samples, fewer than {n_samples} asked"]
    return CalibrationData(str(path), samples, None, seed, notes)


def calibration_data(data: Any, model: Any, **options: Any) -> Any:
    """Data for a pass: a built-in name or a file is loaded (with `model`'s tokenizer, `options` as in
    load_calibration); CalibrationData, tensors or None are passed through as given."""
    if isinstance(data, str | Path):
        return load_calibration(data, tokenizer=getattr(model, "tokenizer", None), **options)
    return data
