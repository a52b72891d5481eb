"""A causal LM's OpenVINO graph with its KV cache held as state, the form openvino-genai runs.

The converted graph takes the past keys and values as inputs (`past_key_values.<i>.key|value`,
[batch, kv heads, past length, head dim]) and returns the new ones (`present.<i>.key|value`); here
each input/output pair becomes a variable (OpenVINO's MakeStateful pass: ReadValue / Assign), so
the cache stays inside the compiled model between calls. As optimum-intel's exports do:
- a `beam_idx` input [batch] selects which row of the cache each row of the batch continues (a
  Gather on the batch axis before each read): arange(batch) for plain decoding, any order for beam
  search;
- each variable starts as zeros of [batch, kv heads, 0, head dim], the batch taken from input_ids,
  so a fresh request (or `reset_state()`) starts with an empty cache of the right batch.
"""

from __future__ import annotations

from typing import Any

from compress.errors import BadInput

BEAM_IDX = "beam_idx"


def past_name(layer: int, part: str) -> str:
    return f"past_key_values.{layer}.{part}"


def present_name(layer: int, part: str) -> str:
    return f"present.{layer}.{part}"


def make_stateful(ov_model: Any, layers: int, kv_heads: int, head_dim: int) -> None:
    """Turn the `layers` past/present pairs of `ov_model` into state, with a beam_idx input (in place)."""
    import numpy as np
    from openvino import opset13 as ops
    from openvino.passes import MakeStateful, Manager

    from compress.openvino.core import require

    ov = require()
    pairs = {past_name(i, part): present_name(i, part) for i in range(layers) for part in ("key", "value")}
    beam = ops.parameter(ov.PartialShape([-1]), ov.Type.i32, name=BEAM_IDX)
    beam.output(0).get_tensor().set_names({BEAM_IDX})
    ov_model.add_parameters([beam])
    axis = ops.constant(np.array(0, dtype=np.int64))
    for name in pairs:
        port = ov_model.input(name)
        port.get_node().set_partial_shape(ov.PartialShape([-1, kv_heads, -1, head_dim]))
        readers = list(port.get_target_inputs())
        reordered = ops.gather(port, beam, axis)
        for reader in readers:
            reader.replace_source_output(reordered.output(0))
    ov_model.validate_nodes_and_infer_types()
    manager = Manager()
    manager.register_pass(MakeStateful(pairs))
    manager.run_passes(ov_model)
    ids_shape = ops.shape_of(ov_model.input("input_ids"), output_type="i64")
    batch = ops.gather(ids_shape, ops.constant(np.array([0], dtype=np.int64)), axis)
    empty = ops.concat([batch, ops.constant(np.array([kv_heads, 0, head_dim], dtype=np.int64))], axis=0)
    for op in ov_model.get_ops():
        if op.get_type_name() == "ReadValue":
            op.set_arguments([ops.broadcast(ops.constant(np.array(0, dtype=np.float32)), empty)])
    ov_model.validate_nodes_and_infer_types()


def position_ids(attention_mask: Any, past: int = 0) -> Any:
    """Positions of each token given a (left-padded) mask of [batch, past + new]: the count of real
    tokens before it (padding gets 1, as transformers' generate gives it); the last `new` columns."""
    import numpy as np

    mask = np.asarray(attention_mask, dtype=np.int64)
    positions = np.cumsum(mask, axis=1) - 1
    positions[mask == 0] = 1
    return positions[:, past:]


class Stateful:
    """One infer request of a compiled stateful causal-LM: `start` a batch, then `step` it."""

    def __init__(self, compiled: Any):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.names = {i.get_any_name() for i in compiled.inputs}
        if "beam_idx" not in self.names or "input_ids" not in self.names:
            raise BadInput(
                "the OpenVINO model is not a stateful causal LM (it needs inputs input_ids and beam_idx)."
            )
        self.mask: Any = None

    def start(self, batch: int) -> None:
        """Forget the cache: the next step is a prompt of `batch` rows."""
        import numpy as np

        self.request.reset_state()
        self.mask = np.zeros((batch, 0), dtype=np.int64)

    def step(self, input_ids: Any, attention_mask: Any = None, positions: Any = None) -> Any:
        """Logits (numpy [batch, positions, vocabulary]) of `input_ids` [batch, new] after everything
        stepped since `start`; `attention_mask` [batch, new] marks padding (ones when None);
        `positions` [batch, new] (None: counted from the mask, as transformers' generate does)."""
        import numpy as np

        ids = np.asarray(input_ids, dtype=np.int64)
        new = np.ones(ids.shape, np.int64) if attention_mask is None else np.asarray(attention_mask, np.int64)
        past = self.mask.shape[1]
        self.mask = np.concatenate([self.mask, new], axis=1)
        feeds = {
            "input_ids": ids,
            "attention_mask": self.mask,
            "beam_idx": np.arange(len(ids), dtype=np.int32),
        }
        if "position_ids" in self.names:
            given = None if positions is None else np.asarray(positions, dtype=np.int64)
            feeds["position_ids"] = position_ids(self.mask, past) if given is None else given
        return self.request.infer(feeds)["logits"]
