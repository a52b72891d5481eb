"""The NNCF backend (`--backend nncf`): NNCF quantizes the model's FP32 ONNX export.

- scheme int8: `nncf.quantize`, NNCF's static post-training INT8 (weights and activations, ranges
  calibrated on compress's calibration texts; model_type TRANSFORMER for transformers): a QDQ graph.
  Embedding lookups stay float unless --embeddings (NNCF's default quantizes them), as compress does.
- scheme int4: `nncf.compress_weights` INT4_SYM / INT4_ASYM with the group size, every MatMul weight
  at INT4 (ratio 1, all_layers) and embeddings in float unless --embeddings, as compress does; method
  awq / gptq map to NNCF's own awq=True / gptq=True (with the calibration data). The graph holds
  MatMulNBits where NNCF packs the weights (or DequantizeLinear + MatMul).
Options NNCF has no equivalent for are refused with one sentence; an exception inside NNCF becomes
"NNCF failed on <model>: <its message>". nncf is imported only here, inside functions (it is slow).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from compress.errors import BadInput

METHODS = {"rtn": {}, "awq": {"awq": True}, "gptq": {"gptq": True}}


def check_settings(cfg: Any) -> None:
    """BadInput for quantize settings NNCF cannot honour (called by QuantizeConfig.validate)."""
    where = "quantize (backend nncf)"
    if cfg.scheme == "int8" and cfg.method != "rtn":
        raise BadInput(f"{where}: method {cfg.method} is an INT4 option of NNCF; use scheme int4.")
    if tuple(cfg.targets.include) != ("*",) or cfg.targets.exclude:
        raise BadInput(
            f"{where}: include/exclude name the checkpoint's layers, which the ONNX graph NNCF works on "
            "names differently; leave them unset."
        )


def describe(cfg: Any) -> str:
    data = cfg.calibration_text()
    if cfg.scheme == "int8":
        embeddings = " and embeddings" if "embedding" in cfg.targets.types else ""
        return f"nncf static int8 (weights{embeddings} and activations)" + data
    text = f"nncf int4 group {cfg.group_size}, {'sym' if cfg.symmetric else 'asym'}, {cfg.method}"
    if "embedding" in cfg.targets.types:
        text += ", embeddings int4"
    return text + data


def compress_with_nncf(
    weights: Path,
    cfg: Any,
    out: Path,
    *,
    data: Any = None,
    recipe: list[dict],
    source_sha256: str,
    extra: dict[str, str] | None = None,
    exports: list[Any] = (),  # type: ignore[assignment]
    progress=None,
):
    """Quantize the checkpoint `weights` with NNCF into the folder `out` (model.onnx, config,
    tokenizer) through the one writer; returns the Artifact (no in-memory model, path = out/model.onnx).
    `data` is the calibration data the runner drew for it (None for data-free weight compression)."""
    from compress.artifact import Artifact
    from compress.memory import peak_rss_mb
    from compress.model import load
    from compress.writer import check_output_folder, write_output

    check_output_folder(out, weights)
    model = load(weights)
    if not model.runnable:
        raise BadInput(f"{weights}: has no config.json beside it; NNCF needs the model to export to ONNX.")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="compress-nncf-") as tmp:
        if progress:
            progress.start("exporting the float model to ONNX", total=None)
        graph, sample = _fp32_graph(model, Path(tmp))
        if progress:
            progress.done()
            progress.start(f"NNCF: {describe(cfg)}", total=None)
        result, call = _run_nncf(graph, cfg, data, model)
        if progress:
            progress.done()
        stats = {"quantize.seconds": time.perf_counter() - started}
        if (peak := peak_rss_mb()) is not None:
            stats["quantize.peak_rss_mb"] = peak
        artifact = Artifact(
            model=None, recipe=recipe, stats=stats, source=weights, source_sha256=source_sha256
        )

        def write_graph(stage: Path, info) -> Path:
            _save(result, stage / "model.onnx", info, call)
            _check_runs(stage / "model.onnx", sample, model.name)
            return stage / "model.onnx"

        artifact.path = write_output(
            out,
            artifact.info(),
            write_weights=write_graph,
            source_folder=weights.parent,
            extra=extra,
            exports=exports,
            progress=progress,
        )
    return artifact


def _fp32_graph(model, folder: Path):
    import onnx

    from compress.onnx import export_onnx
    from compress.onnx.samples import export_samples

    sample, _ = export_samples(None)(model)
    exported = export_onnx(model.module, sample, folder / "fp32")
    return onnx.load(str(exported.path)), sample


def _check_runs(path: Path, sample: dict, name: str) -> None:
    """BadInput when ONNX Runtime cannot load or run NNCF's graph (NNCF can write an invalid one,
    e.g. its INT4 MatMulNBits in place of an embedding Gather, fed int64 token ids)."""
    from compress.onnx import open_session, session_feeds

    try:
        session = open_session(path, "cpu", 1)
        session.run(None, session_feeds(session, sample))
    except Exception as exc:  # onnxruntime's errors carry the reason in their text
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = text.split(" failed:", 1)[-1].strip()  # drop "Load model from <temporary path> failed:"
        raise BadInput(
            f"NNCF failed on {name}: its graph does not run in ONNX Runtime ({text[:300]})"
        ) from None


def _run_nncf(graph, cfg: Any, calibration: Any, model) -> tuple[Any, str]:
    """NNCF's result and the call that made it, as text for the record."""
    import nncf

    dataset = nncf.Dataset(_feeds(graph, calibration)) if calibration is not None else None
    n = len(calibration) if calibration is not None else 0
    try:
        # Embedding lookups (Gather) stay float unless asked for, as in compress's own passes.
        keep = "embedding" not in cfg.targets.types
        scope = {"ignored_scope": nncf.IgnoredScope(types=["Gather"], validate=False)} if keep else {}
        floats = ", ignored_scope=Gather (embeddings stay float)" if keep else ""
        if cfg.scheme == "int8":
            kind = nncf.ModelType.TRANSFORMER if model.config is not None else None
            call = f"nncf.quantize(model_type={kind.name if kind else None}, subset_size={n}{floats})"
            return nncf.quantize(graph, dataset, model_type=kind, subset_size=n, **scope), call
        mode = nncf.CompressWeightsMode.INT4_SYM if cfg.symmetric else nncf.CompressWeightsMode.INT4_ASYM
        options: dict[str, Any] = {**METHODS[cfg.method], **scope}
        if dataset is not None:
            options.update(dataset=dataset, subset_size=n)
        shown = "".join(f", {k}={v}" for k, v in options.items() if k not in ("dataset", "ignored_scope"))
        call = f"nncf.compress_weights(mode={mode.name}, group_size={cfg.group_size}, ratio=1.0, "
        call += f"all_layers=True{shown}{floats})"
        result = nncf.compress_weights(
            graph, mode=mode, group_size=cfg.group_size, ratio=1.0, all_layers=True, **options
        )
        return result, call
    except Exception as exc:  # NNCF raises many types; its message is what the user needs
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"NNCF failed on {model.name}: {text}") from None


def _feeds(graph, calibration) -> list[dict]:
    """Calibration samples as ONNX Runtime feeds for the graph's inputs (numpy, by input name)."""
    import torch

    names = [i.name for i in graph.graph.input if i.name not in {t.name for t in graph.graph.initializer}]
    feeds = []
    for sample in calibration.samples:
        named = sample if isinstance(sample, dict) else {names[0]: sample}
        if "attention_mask" in names and "attention_mask" not in named:
            named = {**named, "attention_mask": torch.ones_like(named["input_ids"])}
        missing = [n for n in names if n not in named]
        if missing:
            raise BadInput(f"calibration samples lack the graph inputs {missing}.")
        feeds.append({n: named[n].detach().cpu().numpy() for n in names})
    return feeds


def _save(result, path: Path, info, call: str) -> None:
    """NNCF's graph with compress's record in its metadata; weights over 2 GB go to model.onnx.data."""
    import nncf
    import onnx

    from compress.backends.onnx_only import stamp
    from compress.onnx.export import EXTERNAL_DATA_BYTES

    stamp(result, info, {"name": "nncf", "version": nncf.__version__, "call": call})
    large = result.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save_model(
        result,
        str(path),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
    )
