"""Calibration: the one settings object for data-aware passes, and the samples it draws.

A recipe owns a `Calibration` (where the data comes from, how many samples, how long, which ones);
a pass that uses data may carry its own `calibration` to override it. The runner resolves the
settings for each pass in one place (`Calibration.resolve`) and draws the samples once per distinct
settings (`draw`), so passes that calibrate alike share one draw. What was drawn is recorded in the
output recipe of every pass that used data.

Text (a built-in name, a .txt file, or the text column of a .jsonl/.csv file) is tokenized once and
`samples` windows of `seq_len` tokens are drawn with a seeded generator, so the same settings
always give the same samples. An .npz file gives ready tensors, split along the first axis: one
array is the model's single input; several arrays are keyword inputs by name (input_ids,
attention_mask, ...), for pre-tokenized data or models that do not take text. In Python, samples
may also be given in memory (a tensor, a list of tensors or dicts): `from_memory`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.config import Settings
from compress.errors import BadInput
from compress.eval.data import BUILTIN_TEXT, load_text

DEFAULT_DATA = "wiki-train"
IN_MEMORY = "samples given in memory"


@dataclass(frozen=True, kw_only=True)
class Calibration(Settings):
    """Calibration data for passes that need it (GPTQ, AWQ, Wanda, static activation ranges).

    data: a built-in text (wiki-train), a .txt/.jsonl/.csv file, or an .npz of ready inputs.
    samples: number of samples drawn; seq_len: tokens per text sample; seed: which windows are drawn.
    """

    data: str = DEFAULT_DATA
    samples: int = 128
    seq_len: int = 512
    seed: int = 0

    def validate(self) -> None:
        if self.samples < 1:
            raise BadInput(f"calibration.samples: need at least 1 (got {self.samples}).")
        if self.seq_len < 2:
            raise BadInput(f"calibration.seq_len: need at least 2 tokens (got {self.seq_len}).")
        if not self.data:
            raise BadInput("calibration.data: give a built-in text (wiki-train), a file, or an .npz.")

    @staticmethod
    def resolve(recipe_default: Calibration, pass_settings: Any) -> Calibration:
        """The settings a pass calibrates with: its own `calibration` if set, else the recipe's."""
        own = getattr(pass_settings, "calibration", None)
        return own if isinstance(own, Calibration) else recipe_default


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

    def drawn(self, asked: Calibration) -> Calibration:
        """The settings that describe what was really drawn (recorded in the output recipe)."""
        return Calibration(
            data=self.source,
            samples=len(self.samples),
            seq_len=self.seq_len if self.seq_len is not None else asked.seq_len,
            seed=self.seed,
        )

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


def draw(settings: Calibration, tokenizer: Any = None) -> CalibrationData:
    """Draw the samples `settings` describe; BadInput when the data is too small or unreadable."""
    import torch

    name = settings.data
    if name.endswith(".npz"):
        return _from_npz(Path(name), settings.samples, settings.seed)
    if tokenizer is None:
        raise BadInput(
            f"calibration: text data ({name}) needs a model with a tokenizer; give this model calibration "
            "inputs (an .npz file, or tensors with data= in Python)."
        )
    text = load_text(name)
    seq_len = settings.seq_len
    # The whole text at once: longer than the model takes, on purpose (it is cut into windows).
    ids = torch.tensor(
        tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=torch.long
    )
    if len(ids) < seq_len:
        raise BadInput(f"{name}: has {len(ids)} tokens, fewer than one calibration sample of {seq_len}.")
    windows = len(ids) // seq_len
    generator = torch.Generator().manual_seed(settings.seed)
    notes = []
    if windows >= settings.samples:  # disjoint windows when the text allows it
        starts = (torch.randperm(windows, generator=generator)[: settings.samples] * seq_len).tolist()
    else:
        notes.append(
            f"{name} holds {windows} disjoint windows of {seq_len} tokens; {settings.samples} samples overlap"
        )
        starts = torch.randint(0, len(ids) - seq_len + 1, (settings.samples,), generator=generator).tolist()
    samples = [
        {"input_ids": ids[s : s + seq_len][None], "attention_mask": torch.ones(1, seq_len, dtype=torch.long)}
        for s in starts
    ]
    return CalibrationData(name, samples, seq_len, settings.seed, notes)


def from_memory(data: Any, seed: int = 0) -> CalibrationData:
    """Samples given in Python: CalibrationData as is, a tensor (split along its first axis), or a
    list of tensors or dicts of tensors."""
    import torch

    if isinstance(data, CalibrationData):
        return data
    if isinstance(data, torch.Tensor):
        if data.dim() < 1 or len(data) == 0:
            raise BadInput("calibration: the tensor given as data is empty.")
        samples: list[Any] = list(data.split(1))
    elif isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        samples = [data]
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
    return CalibrationData(IN_MEMORY, samples, None, seed)


def check_source(settings: Calibration) -> None:
    """A calibration file that is not there fails before any work, not after the earlier passes."""
    name = settings.data
    if name not in BUILTIN_TEXT and not Path(name).is_file():
        known = ", ".join(BUILTIN_TEXT)
        raise BadInput(f"calibration.data: {name}: no such file (built-in texts: {known}).")


def _inputs_of(arrays: dict, path: Path) -> tuple[dict, list[str]]:
    """An evaluation file of inputs and labels (x and y, as compress.eval.data.load_arrays reads it)
    calibrates on its inputs alone: labels are not an input of the model. Other files are as given."""
    from compress.eval.data import INPUT_KEYS, LABEL_KEYS

    inputs = next((k for k in INPUT_KEYS if k in arrays), None)
    labels = [k for k in arrays if k in LABEL_KEYS]
    if inputs is None or not labels:
        return arrays, []
    note = f"{path}: calibrates on its inputs '{inputs}' ({', '.join(labels)}: labels, not model inputs)"
    return {inputs: arrays[inputs]}, [note]


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
    arrays, labelled = _inputs_of(arrays, path)
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
    notes = labelled + (
        [] if count >= n_samples else [f"{path} has {count} samples, fewer than {n_samples} asked"]
    )
    first = next(iter(arrays.values()))
    tokens = first.ndim == 2 and first.dtype.kind in "iu"  # token ids: [samples, seq_len]
    return CalibrationData(str(path), samples, int(first.shape[1]) if tokens else None, seed, notes)
