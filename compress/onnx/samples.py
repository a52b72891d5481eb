"""Sample inputs to export a model to a graph with, and inputs of other shapes to check the graph on.

Texts of different lengths: exporting with padding keeps the attention mask in the traced graph, and
checking on other batch sizes and lengths catches a shape the exporter fixed by mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compress.errors import Unavailable
from compress.eval.calls import batch_size_of
from compress.eval.text import tokenize

_EXPORT_TEXTS = ["a short one", "a longer sentence, so that the batch holds padding and a real mask"]
_CHECK_TEXTS = ["checking", "another shape than the export's", "three rows, with padding in them"]


def export_samples(inputs: Any) -> Callable[[Any], tuple[Any, list[Any]]]:
    """Inputs to export each model with and to check the export on (other batch sizes and lengths)."""
    import torch

    def samples(model: Any):
        if inputs is not None:
            named = inputs if isinstance(inputs, dict) else None
            doubled = (
                {k: torch.cat([v, v]) for k, v in named.items()}
                if named is not None
                else torch.cat([inputs, inputs])
                if isinstance(inputs, torch.Tensor)
                else [torch.cat([v, v]) for v in inputs]
            )
            return inputs, [doubled] if batch_size_of(inputs) else []
        if model.tokenizer is None:
            raise Unavailable("needs sample inputs for a model without a tokenizer")
        keep = ("input_ids", "attention_mask")  # what latency_inputs gives; BERT makes token types itself
        export, check = (tokenize(model, texts, 64) for texts in (_EXPORT_TEXTS, _CHECK_TEXTS))
        return {k: export[k] for k in keep}, [{k: check[k] for k in keep}]

    return samples
