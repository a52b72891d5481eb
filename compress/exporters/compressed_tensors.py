"""The compressed-tensors exporter: `compressed-tensors/` beside the checkpoint, for transformers and vLLM.

The folder holds `model.safetensors` in compressed-tensors' layout (see ct_layout.py), `config.json`
with its `quantization_config`, and the tokenizer and other side files. It is built from the
checkpoint's own integer codes and scales, whatever method chose them (RTN, GPTQ, AWQ, HQQ): nothing
is quantized again. INT4 and weight-only INT8 layers are pack-quantized (W4A16, W8A16), INT8 layers
with dynamic or static activations int-quantized (W8A8). Layers of one scheme form one config
group; with several schemes (keep_int8) each group names its layers. Linear layers left in float are
listed in `ignore`. SmoothQuant factors have no place in the format: they are folded into the norm
that feeds the layers when that is exact, or the export is refused (fold_smoothing.py).

Refused, before any pass runs where the settings tell (check) and otherwise when the checkpoint is
read: pruned models (compressed-tensors 0.20 has no sparse format; structurally pruned shapes do not
fit config.json), quantized embedding tables (transformers' compressed-tensors loader cannot run
them; vLLM quantizes Linear layers only) and convolutions, SmoothQuant on layers that read no norm,
NNCF outputs (an ONNX graph, no checkpoint).

Loading notes (transformers 5.25, compressed-tensors 0.20.1): asymmetric pack-quantized checkpoints
load only with `CompressedTensorsConfig(dequantize=True)` (the package's own output too), and then
only with one config group; dynamic activations are rounded per token with max|x| / 127.5 by
transformers' reference code, max|x| / 127 by compress and vLLM's kernel.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from compress.errors import BadInput, Unsupported
from compress.exporters import ExportConfig, ExporterSpec

SUBFOLDER = "compressed-tensors"
# The compressed-tensors release whose layout and config this exporter writes (config `version`).
SPEC_VERSION = "0.20.1"


@dataclass(frozen=True, kw_only=True)
class CompressedTensorsExportConfig(ExportConfig):
    """No settings: the layout follows from the checkpoint."""

    format: ClassVar[str] = "compressed-tensors"


def check(passes: list[Any], cfg: CompressedTensorsExportConfig) -> None:
    """Refuse, before any pass runs, what compressed-tensors cannot hold."""
    for p in passes:
        if p.kind == "prune":
            what = (
                "structurally pruned shapes do not fit config.json"
                if p.structured
                else ("compressed-tensors 0.20 has no sparse format, so its zeros would be stored dense")
            )
            raise BadInput(
                f"export compressed-tensors cannot hold a {p.pattern} pruned model ({what}); drop the "
                "prune pass or export to onnx."
            )
    from compress.passes.quantize.config import NncfConfig

    quantize = [p for p in passes if p.kind == "quantize"]
    if not quantize:
        raise BadInput("export compressed-tensors needs a quantize pass: a float model loads as it is.")
    last = quantize[-1]
    if isinstance(last, NncfConfig):
        raise BadInput(
            "export compressed-tensors reads compress's checkpoint; backend nncf writes an ONNX graph."
        )
    if "embedding" in last.targets.types:
        raise BadInput(_EMBEDDING_REFUSAL)
    if "conv" in last.targets.types:
        raise BadInput(_CONV_REFUSAL)
    if (
        getattr(last, "smooth_alpha", None) is not None
        and "*" in last.targets.include
        and not last.targets.exclude
    ):
        raise BadInput(
            "export compressed-tensors cannot hold SmoothQuant factors on every Linear layer: only those "
            "that read a pre-norm (q/k/v, gate/up) fold into it, so set smooth 0 or exclude the others "
            "(such as *o_proj and *down_proj)."
        )


_EMBEDDING_REFUSAL = (
    "export compressed-tensors cannot hold quantized embedding tables (transformers' compressed-tensors "
    "loader cannot run them and vLLM quantizes Linear layers only), which compress quantizes by default: "
    "add --embeddings float (a recipe: targets types [linear]; Python: embeddings='float')."
)
_CONV_REFUSAL = (
    "export compressed-tensors cannot hold quantized convolutions: the format quantizes Linear layers "
    "only; quantize with targets types [linear]."
)


def export(folder: Path, cfg: CompressedTensorsExportConfig, progress=None) -> list[Path]:
    """Write `folder/compressed-tensors/` from the compressed checkpoint in `folder`; the paths written."""
    from compress.checkpoint import atomic_output_dir, save_tensors

    folder = Path(folder)
    tensors, config_json, quantization_config = convert_folder(folder)
    out = folder / SUBFOLDER
    written = []
    with atomic_output_dir(out) as staging:
        save_tensors(staging / "model.safetensors", tensors, {"format": "pt"})
        config_json["quantization_config"] = quantization_config
        (staging / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
        written += [out / "model.safetensors", out / "config.json"]
        written += _copy_side_files(folder, staging, out)
    return written


def convert_folder(folder: Path) -> tuple[dict, dict, dict]:
    """(tensors, config.json as a dict, quantization_config) for the checkpoint in `folder`."""
    from compress.exporters.ct_layout import layer_export
    from compress.formats.quantized import QuantizedTensor
    from compress.model import activation_modes

    info, config, stored = _read_checkpoint(folder)
    layout = ModelLayout.of(config, list(stored))
    quantized = {layout.names[n]: t for n, t in stored.items() if isinstance(t, QuantizedTensor)}
    for name in quantized:
        kind = layout.kinds.get(name.removesuffix(".weight"))
        if kind is None:
            raise BadInput(f"{folder}: encoded weight '{name}' belongs to no Linear layer of the model.")
        if kind != "Linear":
            raise BadInput(_EMBEDDING_REFUSAL if kind == "Embedding" else _CONV_REFUSAL)
    parts, part_names = _activation_parts(stored, layout)
    plain = {
        layout.names[n]: t
        for n, t in stored.items()
        if not isinstance(t, QuantizedTensor) and n not in part_names
    }
    smooth = {layer: p["input_smooth"] for layer, p in parts.items() if "input_smooth" in p}
    if smooth:
        from compress.exporters.fold_smoothing import fold_smoothing

        plain.update(fold_smoothing(folder, smooth, plain))
    modes = {layout.names.get(n, n): mode for n, mode in activation_modes(info).items()}
    scale_dtype = int4_scale_dtype(config)
    out = dict(plain)
    schemes: dict[str, dict] = {}
    for name, qt in quantized.items():
        layer = name.removesuffix(".weight")
        mine = parts.get(layer, {})
        mode = modes.get(name, modes.get("*", "none"))  # "*": a 0.1 header (compress.model.activation_modes)
        layer_mode = mode if (mode != "static" or "input_scale" in mine) else "none"
        exported = layer_export(qt, layer_mode, mine, scale_dtype)
        schemes[layer] = exported.scheme
        out.update({f"{layer}.{local}": t for local, t in exported.tensors.items()})
    return out, _config_json(folder), quantization_config(schemes, layout)


def _read_checkpoint(folder: Path):
    """(CompressionInfo, transformers config, decoded tensors); BadInput for what cannot be exported."""
    from compress.checkpoint import SafetensorsFile
    from compress.formats import decode, read_compression_info
    from compress.model import load_config, resolve_checkpoint

    weights = resolve_checkpoint(folder)
    file = SafetensorsFile(weights)
    info = read_compression_info(file.metadata, str(weights))
    if info is None or not info.tensors:
        raise BadInput(f"{weights}: is not a quantized compress checkpoint; nothing to export.")
    prune = next((p for p in info.recipe if p.get("kind") == "prune"), None)
    if info.resized or prune is not None:
        raise BadInput(
            f"export compressed-tensors cannot hold {weights}: it was pruned "
            f"({(prune or {}).get('pattern', 'structured')}), which the format cannot store."
        )
    if not any(s.get("scheme") in ("int8", "int4") for s in info.tensors.values()):
        raise BadInput(f"{weights}: has no quantized weights; nothing to export.")
    config = load_config(weights.parent)
    if config is None:
        raise Unsupported(f"{weights.parent}: has no config.json, so transformers has no model to load.")
    return info, config, decode(file.read_all(), info)


def int4_scale_dtype(config):
    """float32 for a float32 model, so every loader dequantizes exactly as compress does (transformers'
    dequantize path computes in the scale's dtype); else compress's own float16."""
    import torch

    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return torch.float32 if dtype in (None, torch.float32, "float32") else torch.float16


@dataclass
class ModelLayout:
    """The architecture's module names: stored names mapped to them, and the type of each layer."""

    names: dict[str, str]  # stored tensor name -> the model's parameter name
    kinds: dict[str, str]  # module name -> "Linear" | "Embedding" | "Conv" for weight-holding layers

    @classmethod
    def of(cls, config, stored: list[str]) -> ModelLayout:
        import torch
        from torch import nn

        from compress.model import align_names, architecture_class

        with torch.device("meta"):
            model = architecture_class(config)(config)
        expected = set(model.state_dict())
        names = align_names(stored, expected, getattr(model, "base_model_prefix", ""))
        kinds = {}
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                kinds[name] = "Linear"
            elif isinstance(module, nn.Embedding):
                kinds[name] = "Embedding"
            elif isinstance(module, nn.modules.conv._ConvNd):
                kinds[name] = "Conv"
        return cls(names=names, kinds=kinds)


def _activation_parts(stored: dict, layout: ModelLayout) -> tuple[dict[str, dict], set[str]]:
    """({layer: {input_smooth / input_scale / input_zero: tensor}}, the stored names they come from)."""
    from compress.qmodules import ACTIVATION_PARTS

    parts: dict[str, dict] = {}
    names = set()
    for name, value in stored.items():
        layer, _, part = layout.names[name].rpartition(".")
        if part in ACTIVATION_PARTS:
            parts.setdefault(layer, {})[part] = value
            names.add(name)
    return parts, names


def quantization_config(schemes: dict[str, dict], layout: ModelLayout) -> dict:
    """The `quantization_config` of config.json: one config group per distinct scheme."""
    groups: list[tuple[dict, list[str]]] = []
    for layer in (name for name in layout.kinds if name in schemes):  # in the model's module order
        scheme = schemes[layer]
        for known, layers in groups:
            if known == scheme:
                layers.append(layer)
                break
        else:
            groups.append((scheme, [layer]))
    floats = sorted(n for n, kind in layout.kinds.items() if kind == "Linear" and n not in schemes)
    single = len(groups) == 1
    config_groups = {
        f"group_{i}": {"targets": ["Linear"] if single else layers, **scheme}
        for i, (scheme, layers) in enumerate(groups)
    }
    formats = {scheme["format"] for scheme, _ in groups}
    return {
        "config_groups": config_groups,
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
        "ignore": floats,
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "global_compression_ratio": None,
        "version": SPEC_VERSION,
    }


def _config_json(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{folder / 'config.json'}: cannot be read ({exc}).") from None


def _copy_side_files(folder: Path, staging: Path, out: Path) -> list[Path]:
    from compress.model import SIDE_FILES

    copied = []
    for name in SIDE_FILES:
        source = folder / name
        if name == "config.json" or not source.is_file():
            continue
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, staging / name)
        copied.append(out / name)
    return copied


EXPORTER = ExporterSpec(
    format="compressed-tensors",
    config=CompressedTensorsExportConfig,
    export=export,
    summary="compressed-tensors/ (W4A16, W8A16 pack-quantized; W8A8 int-quantized) for transformers and vLLM",
    check=check,
    requires=("transformers",),
)
