"""A sample input to trace a model with, for structured pruning's dependency analysis.

The first calibration sample when there is data (compress.statistics.sample_list), else one built
from the model's config (token ids or pixels).
"""

from __future__ import annotations

from typing import Any

from compress.errors import BadInput
from compress.statistics import sample_list, without_cache

SAMPLE_TOKENS = 13  # a sequence length unlike any channel count, so no reshape is ambiguous


def example_input(module, data: Any) -> Any:
    """An input to trace `module` with: the first calibration sample, or one built from its config."""
    import torch

    samples = sample_list(data)
    if samples:
        return without_cache(module, samples[0])
    config = getattr(module, "config", None)
    main = getattr(module, "main_input_name", None)
    if config is not None and main == "input_ids":
        vocab = int(getattr(config, "vocab_size", 100) or 100)
        ids = (torch.arange(2 * SAMPLE_TOKENS).reshape(2, SAMPLE_TOKENS) * 7 + 3) % vocab
        return without_cache(module, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    if config is not None and main == "pixel_values":
        size = int(getattr(config, "image_size", 32) or 32)
        channels = int(getattr(config, "num_channels", 3) or 3)
        pixels = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))
        return {"pixel_values": pixels}
    raise BadInput(
        f"prune: structured pruning traces the model, and a {type(module).__name__} needs a sample input "
        "for that; give calibration data (--calib FILE.npz, or data=... in Python)."
    )
