"""ONNX Runtime sessions: the provider for a device, the thread count, and feeding torch tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.errors import Unavailable

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def provider_for(device: str) -> str:
    """The execution provider for `device`; Unavailable (with the reason) when this onnxruntime lacks it."""
    import onnxruntime as ort

    provider = PROVIDERS.get(device)
    if provider is None:
        raise Unavailable(f"onnxruntime has no provider for device '{device}'")
    available = ort.get_available_providers()
    if provider not in available:
        raise Unavailable(
            f"onnxruntime {ort.__version__} has no {provider} (available: {', '.join(available)})"
        )
    return provider


def open_session(path: str | Path, device: str = "cpu", threads: int | None = None, *, arena: bool = True):
    """An InferenceSession on `device` with `threads` intra-op threads (None: onnxruntime's default).
    `arena=False` returns freed buffers to the system (many sessions of a large model side by side)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings would go to the user's terminal
    return ort.InferenceSession(str(path), sess_options=options, providers=[provider_for(device)])


def session_feeds(session, inputs: dict[str, Any]) -> dict[str, Any]:
    """numpy feeds for the inputs the graph takes (the exporter drops inputs the model ignores)."""
    wanted = [i.name for i in session.get_inputs()]
    missing = [n for n in wanted if n not in inputs]
    if missing:
        raise Unavailable(f"the ONNX graph needs inputs {missing} that the samples do not have")
    return {n: inputs[n].detach().cpu().numpy() for n in wanted}
