"""A torch-like module that runs a compiled OpenVINO model.

It lets the accuracy tasks score a model through OpenVINO exactly as they score a torch model (same
data, tokenizer and metric), as compress.onnx.module.OrtModule does for ONNX Runtime.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from compress.errors import Unavailable


class OvModule(torch.nn.Module):
    """Calls the compiled model with the keyword tensors it takes; its first output comes back as both
    `last_hidden_state` and `logits`, so encoder, classifier and causal-LM tasks find it. A model
    that takes an attention mask gets one of ones when the caller gives only input_ids."""

    def __init__(self, compiled):
        super().__init__()
        self.compiled = compiled
        self.names = [i.get_any_name() for i in compiled.inputs]
        self.request = compiled.create_infer_request()

    def feeds(self, inputs: dict) -> dict:
        """numpy feeds for the inputs the model takes (the exporter drops inputs the model ignores)."""
        missing = [n for n in self.names if n not in inputs]
        if missing:
            raise Unavailable(f"the OpenVINO model needs inputs {missing} that the samples do not have")
        return {n: inputs[n].detach().cpu().numpy() for n in self.names}

    def forward(self, *args, **inputs):
        if args:
            inputs = {**dict(zip(self.names, args, strict=False)), **inputs}
        if "attention_mask" in self.names and "attention_mask" not in inputs and "input_ids" in inputs:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        result = self.request.infer(self.feeds(inputs))
        output = torch.from_numpy(result[self.compiled.output(0)].copy())
        return SimpleNamespace(last_hidden_state=output, logits=output)
