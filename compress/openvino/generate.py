"""Greedy decoding with a stateful OpenVINO IR, timed step by step (for the evaluator's generation
metrics and benchmarks/llm.py).

The IR is the one compress's openvino exporter writes for a causal LM (`<folder>/openvino/
openvino_model.xml`: inputs input_ids, attention_mask, position_ids, beam_idx; output logits; the
KV cache held as state, see compress.openvino.stateful), or any IR of that form (optimum-intel's,
or NNCF's compression of one). Decoding here is what openvino-genai's LLMPipeline does for greedy
search, in a Python loop, so every call is timed on its own:

    decoder = OvDecoder("out/gemma-int4")                 # a compress Model folder (or an .xml path)
    result = decoder.generate(prompt_ids, new_tokens=32)  # prompt_ids: [batch, tokens] int
    result.tokens            # numpy int64 [batch, new_tokens]
    result.first_token_s     # the prompt's call: time to the first new token
    result.step_s            # one time per later token (new_tokens - 1 decode calls)

As genai does, the decoder computes logits for the last position only (a Slice inserted before the
output MatMul of its own copy of the graph): a prompt's logits for every position are never used
in decoding, and for a large vocabulary they cost as much as the rest of the prompt's call.
`Stateful` runs the IR as it is (all positions' logits), for perplexity and the export check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import BadInput
from compress.openvino.stateful import Stateful


@dataclass
class Generation:
    """The new tokens of a greedy decoding and the time of each call (seconds, perf_counter)."""

    tokens: Any  # numpy int64 [batch, new_tokens]
    first_token_s: float  # the prompt's call: time to the first new token
    step_s: list[float] = field(default_factory=list)  # each later token's call

    @property
    def decode_tokens_per_s(self) -> float:
        """New tokens per second of one sequence after the first (batch rows decode together)."""
        return len(self.step_s) / sum(self.step_s) if self.step_s else float("nan")


class OvDecoder:
    """Greedy decoding with a stateful causal-LM IR on the CPU.

    source: a compress Model folder with the exported IR (`<folder>/openvino/openvino_model.xml`),
    that `openvino/` folder, an .xml path, or an ov.Model (e.g. compress.openvino.llm.
    convert_causal_lm(model.module, model.config)[0] for a checkpoint without an exported IR; it is
    copied, not changed). threads: inference threads (None: OpenVINO's choice). precision:
    OpenVINO's inference precision for what is not integer ('f32': compress's arithmetic; 'bf16';
    None: OpenVINO's default). faithful: compile with compress's settings (no dynamic quantization of
    activations, KV cache in f32); False: OpenVINO's (the IR's rt_info options still apply).
    properties: more compile properties, applied last.
    """

    def __init__(
        self,
        source: Any,
        *,
        threads: int | None = None,
        precision: str | None = "f32",
        faithful: bool = True,
        properties: dict[str, Any] | None = None,
    ):
        from compress.openvino.core import FAITHFUL, FAITHFUL_CACHE, compile_model, core

        if isinstance(source, str | Path):
            self.path: Path | None = llm_ir_path(source)
            ov_model = core().read_model(str(self.path))
        else:
            self.path, ov_model = None, source.clone()
        self.sliced = slice_last_logits(ov_model)
        config = {**FAITHFUL, **FAITHFUL_CACHE} if faithful else {}
        config.update(properties or {})
        self.compiled = compile_model(ov_model, threads=threads, precision=precision, properties=config)
        self.runner = Stateful(self.compiled)

    def generate(
        self, input_ids: Any, new_tokens: int, attention_mask: Any = None, clock: Any = time.perf_counter
    ) -> Generation:
        """Greedy decoding of `new_tokens` tokens after `input_ids` [batch, prompt] (numpy, torch or
        lists; left-padded rows need `attention_mask`). No stop at end-of-sequence: every row gets
        `new_tokens` tokens, so every run times the same number of calls. `clock`: the seconds
        clock each call is timed with (the evaluator's, to time as its other decoders do)."""
        import numpy as np

        ids = np.asarray(input_ids.cpu() if hasattr(input_ids, "cpu") else input_ids, dtype=np.int64)
        mask = None if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
        if ids.ndim != 2 or new_tokens < 1:
            raise BadInput("generate takes input_ids of [batch, tokens] and new_tokens >= 1.")
        self.runner.start(len(ids))
        tokens, times = [], []
        step_input = ids
        for _ in range(new_tokens):
            started = clock()
            logits = self.runner.step(step_input, mask)
            chosen = logits[:, -1].argmax(-1)
            times.append(clock() - started)
            tokens.append(chosen)
            step_input, mask = chosen[:, None].astype(np.int64), None
        return Generation(np.stack(tokens, axis=1), times[0], times[1:])


def llm_ir_path(source: str | Path) -> Path:
    """The stateful IR of `source`: a compress folder, its openvino/ folder, or the .xml itself."""
    from compress.openvino.ir import IR_DIR, IR_NAME

    path = Path(source)
    for candidate in (path, path / IR_NAME, path / IR_DIR / IR_NAME):
        if candidate.is_file() and candidate.suffix == ".xml":
            return candidate
    raise BadInput(f"{path}: has no OpenVINO IR ({IR_DIR}/{IR_NAME}); export one with `--export openvino`.")


def slice_last_logits(ov_model: Any) -> bool:
    """Make `ov_model` compute logits for the last position only: a Slice of the hidden states on
    the sequence axis before the MatMul that makes the logits output (found through the elementwise
    ops after it, such as a soft-capping). Returns False, changing nothing, when there is none."""
    import numpy as np
    from openvino import opset13 as ops

    if not any("logits" in output.get_names() for output in ov_model.outputs):
        return False
    node = ov_model.output("logits").get_node().input_value(0).get_node()
    while node.get_type_name() != "MatMul":  # through a soft-capping: Divide, Tanh, Multiply, Convert
        if node.get_type_name() not in ("Convert", "Multiply", "Divide", "Tanh", "Add"):
            return False
        inputs = [v.get_node() for v in node.input_values() if v.get_node().get_type_name() != "Constant"]
        if len(inputs) != 1:
            return False
        node = inputs[0]
    hidden = node.input_value(0)

    def const(value: int):
        return ops.constant(np.array([value], dtype=np.int64))

    last = ops.slice(hidden, const(-1), const(np.iinfo(np.int64).max), const(1), const(1))
    node.input(0).replace_source_output(last.output(0))
    ov_model.validate_nodes_and_infer_types()
    return True
