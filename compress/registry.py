"""Pass registry: built-in and third-party passes, discovered through the `compress.passes` entry point.

A package adds a pass by declaring, in its pyproject.toml:

    [project.entry-points."compress.passes"]
    mypass = "mypackage.module:PASS"

where PASS is a `PassSpec`. compress's own passes are registered the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from compress.config import PassConfig
from compress.errors import BadInput

ENTRY_POINT_GROUP = "compress.passes"


@dataclass
class PassContext:
    """What a pass may use besides the model and its settings."""

    data: Any | None = None  # calibration data, for passes that need it
    device: str = "cpu"
    seed: int = 0
    progress: Any | None = None  # compress.progress.Progress
    # compress.deferred.DeferredWeights when the model's tensors are still on disk (a pass with
    # PassSpec.deferred reads them block by block); None when the model is fully in memory.
    weights: Any | None = None
    # compress.usermodule.ModelSpec: the user's class that the run loads its checkpoints into
    # (--module, a recipe's `model:`), for a pass that loads another checkpoint (a teacher); None: none.
    model_spec: Any | None = None


@dataclass
class PassResult:
    """A pass's output: the changed model and what it changed, layer by layer."""

    module: Any
    changes: dict[str, dict] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    # Set by passes that rewrote the architecture (pruning): the new config to save beside the weights.
    config: Any | None = None


@dataclass(frozen=True)
class PassSpec:
    """How to run one kind of pass."""

    kind: str
    config: type[PassConfig]
    apply: Callable[[Any, PassConfig, PassContext], PassResult]
    summary: str
    # Optional: a pass that transforms each weight independently can stream a checkpoint without
    # building the model (compress.streaming): an encoder with can_stream(cfg), check(names, cfg),
    # plan(names, shape, cfg) -> scheme (checked before any data is read), encode(tensor, cfg, scheme)
    # -> encoded tensor and record(tensor, encoded, cfg, tied) -> the weight's record.
    stream: Any | None = None
    requires: tuple[str, ...] = ()
    # True when apply() can start on a model whose tensors are still on disk and read them through
    # ctx.weights as it goes (block by block), which keeps peak memory near one block.
    deferred: bool = False
    # Optional: (report, artifact, cfg, baseline, evaluation, inputs) -> None adds the pass's own
    # section to the report (distillation's record, its student's score before training).
    annotate_report: Callable[..., None] | None = None
    # Optional: (cfg, batch_size) -> sample inputs from the pass's own data, for a model without a
    # tokenizer (distillation's training .npz), or None.
    sample_inputs: Callable[[Any, int], Any] | None = None
    # Optional: (cfg) -> the checkpoint the result is evaluated against instead of the run's input
    # (a distilled student against its teacher).
    baseline: Callable[[Any], Any] | None = None
    # What the pass's data is, for `compress passes`: "calibration" (samples for statistics) or
    # "training" (distillation's own training data, a required setting).
    data_kind: str = "calibration"

    @property
    def needs_data(self) -> bool:
        return self.config.needs_data


@dataclass(frozen=True)
class BrokenPass:
    """A plug-in whose entry point failed to load; listed with the reason, never silently dropped."""

    kind: str
    target: str
    reason: str


@cache
def _discover() -> tuple[dict[str, PassSpec], dict[str, BrokenPass]]:
    from importlib.metadata import entry_points

    found: dict[str, PassSpec] = {}
    broken: dict[str, BrokenPass] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = ep.load()
        except Exception as exc:  # a broken plug-in must not break compress
            broken[ep.name] = BrokenPass(ep.name, ep.value, f"{type(exc).__name__}: {exc}")
            continue
        if not isinstance(spec, PassSpec):
            broken[ep.name] = BrokenPass(ep.name, ep.value, "entry point is not a compress.registry.PassSpec")
            continue
        found[spec.kind] = spec
    return found, broken


def available_passes() -> dict[str, PassSpec]:
    return dict(_discover()[0])


def broken_passes() -> dict[str, BrokenPass]:
    return dict(_discover()[1])


def get_pass(kind: str) -> PassSpec:
    passes, broken = _discover()
    if kind in passes:
        return passes[kind]
    if kind in broken:
        raise BadInput(f"pass '{kind}' is installed but failed to load: {broken[kind].reason}.")
    valid = ", ".join(sorted(passes)) or "none installed"
    raise BadInput(f"unknown pass kind '{kind}'; installed passes: {valid}.")


def config_from_dict(data: dict, where: str = "") -> PassConfig:
    """Build a pass's settings from a dict with a `kind` key (as in a recipe)."""
    if "kind" not in data:
        raise BadInput(f"{where or 'pass'}: missing 'kind'.")
    spec = get_pass(str(data["kind"]))
    return spec.config.from_dict(data, where or spec.kind)
