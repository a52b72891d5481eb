"""Options of the evaluator's generation metrics (causal LMs): `compress eval --generate ...`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

GENERATION_OPTIONS = [
    click.option(
        "--generate/--no-generate",
        "generate",
        default=None,
        help="Time to first token, decode tokens/s and greedy agreement [default: on for causal LMs].",
    ),
    click.option(
        "--prompt-tokens", type=int, default=128, show_default=True, help="generate: prompt length."
    ),
    click.option(
        "--new-tokens",
        type=int,
        default=64,
        show_default=True,
        help="generate: greedy tokens per timed run (no stop at end-of-sequence).",
    ),
    click.option(
        "--generate-batch",
        "generate_batch",
        default="1,8",
        show_default=True,
        metavar="N[,N]",
        help="generate: batch sizes, comma-separated (a row each); --budget bounds their timing.",
    ),
]


def generation_options(fn: Callable) -> Callable:
    for option in reversed(GENERATION_OPTIONS):
        fn = option(fn)
    return fn


def generation_settings(opts: dict[str, Any]):
    """The GenerationSettings the options describe; the defaults for a command without them."""
    from compress.errors import BadInput
    from compress.eval.generation import GenerationSettings

    if "generate" not in opts:
        return GenerationSettings()
    given = opts["generate_batch"]
    try:
        batches = tuple(int(v) for v in given.split(",") if v.strip())
    except ValueError:
        raise BadInput(f"--generate-batch: expected numbers such as 1,8, got '{given}'.") from None
    return GenerationSettings(
        enabled=opts["generate"],
        prompt_tokens=opts["prompt_tokens"],
        new_tokens=opts["new_tokens"],
        batch_sizes=batches,
    )
