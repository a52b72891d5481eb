"""A torch-like module that runs an ONNX graph through ONNX Runtime.

It lets the accuracy tasks score a model that exists only as ONNX (a graph another tool
quantized), exactly as they score a torch model: same data, same tokenizer, same metric.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch


class OrtModule(torch.nn.Module):
    """Calls `session.run` with the keyword tensors it is given; the graph's first output comes back
    as both `last_hidden_state` and `logits`, so encoder, classifier and causal-LM tasks find it.
    A graph that takes an attention mask gets one of ones when the caller gives only input_ids."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        super().__init__()
        from compress.onnx.session import open_session

        self.path = Path(path)
        self.session = open_session(self.path, device, threads)

    def forward(self, *args, **inputs):
        from compress.onnx.session import session_feeds

        if args:
            names = [i.name for i in self.session.get_inputs()]
            inputs = {**dict(zip(names, args, strict=False)), **inputs}
        wanted = {i.name for i in self.session.get_inputs()}
        if "attention_mask" in wanted and "attention_mask" not in inputs and "input_ids" in inputs:
            # As a transformers model does without a mask: every token is attended to (the
            # perplexity task calls a causal LM with input_ids only).
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        output = torch.from_numpy(self.session.run(None, session_feeds(self.session, inputs))[0])
        return SimpleNamespace(last_hidden_state=output, logits=output)
