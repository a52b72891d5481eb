"""Running teacher and student on a batch: inputs from the training set, and the outputs the losses
compare (logits, the last hidden state, and the outputs of the paired layers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compress.errors import BadInput


@dataclass
class Batch:
    inputs: Any  # dict of tensors (text) or one tensor
    mask: Any | None  # [batch, tokens] attention mask, for text
    labels: Any | None


class Batcher:
    """Builds batches from sample indices: texts tokenized with padding, tensors stacked."""

    def __init__(self, data, tokenizer_model, max_length: int, device: str, call_options: dict):
        self.data, self.model = data, tokenizer_model
        self.max_length, self.device = max_length, device
        self.call_options = call_options  # e.g. use_cache=False for a causal LM

    def __call__(self, indices: list[int]) -> Batch:
        from compress.eval.text import tokenize

        labels = self.data.labels[indices].to(self.device) if self.data.labels is not None else None
        if self.data.is_text:
            if self.model is None or self.model.tokenizer is None:
                raise BadInput(f"{self.data.source}: text data needs a teacher with a tokenizer beside it.")
            enc = tokenize(self.model, [self.data.inputs[i] for i in indices], self.max_length)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            return Batch({**enc, **self.call_options}, enc.get("attention_mask"), labels)
        return Batch(self.data.inputs[indices].to(self.device), None, labels)


@dataclass
class Outputs:
    main: Any  # logits, else the last hidden state
    logits: Any | None
    hidden: dict[str, Any]


class Tap:
    """Calls a module and keeps the outputs of the named submodules (forward hooks)."""

    def __init__(self, module, names: list[str]):
        self.module = module
        self.names = names
        self._seen: dict[str, Any] = {}
        self._handles = [module.get_submodule(n).register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name: str):
        def hook(_module, _args, output):
            self._seen[name] = first_tensor(output)

        return hook

    def __call__(self, batch: Batch) -> Outputs:
        from compress.eval.calls import call_module, main_output

        self._seen = {}
        out = call_module(self.module, batch.inputs)
        logits = getattr(out, "logits", None)
        if logits is None and not hasattr(out, "last_hidden_state") and hasattr(out, "dim"):
            logits = out  # a plain module's output tensor: scores to distil
        missing = [n for n in self.names if n not in self._seen]
        if missing:
            raise BadInput(f"distill: layer '{missing[0]}' was not called by the forward pass.")
        return Outputs(main=main_output(out), logits=logits, hidden=dict(self._seen))

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def first_tensor(output):
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    for key in ("last_hidden_state", "hidden_states"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise BadInput(f"distill: cannot find an output tensor in a {type(output).__name__}.")
