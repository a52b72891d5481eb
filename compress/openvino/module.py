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
    that takes an attention mask gets one of ones when the caller gives only input_ids.

    A stateful causal LM (compress's LLM IR: a beam_idx input, the KV cache as state) is called as
    a whole sequence from an empty cache each time (compress.openvino.generate.Stateful), so
    perplexity through it reads the same logits as through torch."""

    def __init__(self, compiled):
        super().__init__()
        self.compiled = compiled
        self.names = [i.get_any_name() for i in compiled.inputs]
        self.request = compiled.create_infer_request()
        self.stateful = None
        if "beam_idx" in self.names:
            from compress.openvino.stateful import Stateful

            self.stateful = Stateful(compiled)

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
        if self.stateful is not None:  # positions as a torch causal LM counts them: 0, 1, ... per row
            ids, mask = inputs["input_ids"], inputs["attention_mask"]
            positions = inputs.get("position_ids", torch.arange(ids.shape[1]).expand(ids.shape))
            self.stateful.start(len(ids))
            logits = self.stateful.step(ids.cpu().numpy(), mask.cpu().numpy(), positions.cpu().numpy())
            output = torch.from_numpy(logits.copy())
            return SimpleNamespace(last_hidden_state=output, logits=output)
        result = self.request.infer(self.feeds(inputs))
        output = torch.from_numpy(result[self.compiled.output(0)].copy())
        return SimpleNamespace(last_hidden_state=output, logits=output)
