"""Loading a checkpoint into a runnable model, compressed or not, through one code path.

A `.safetensors` file with `config.json` beside it (or that folder) becomes the transformers
architecture named in the config, with every stored tensor loaded in: plain tensors as parameters,
encoded weights as quantized modules. A bare `.safetensors` with no config loads as tensors only.
A `torch.nn.Module` is wrapped as is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.checkpoint import SafetensorsFile
from compress.errors import BadInput, Unsupported
from compress.formats import CompressionInfo, decode, read_compression_info

WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"
# Files a model needs beside its weights; copied into every output folder.
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)


@dataclass
class Model:
    """A model ready to run or evaluate, with what compress knows about where it came from."""

    module: Any | None  # torch.nn.Module; None for a bare checkpoint with no architecture
    family: str  # "encoder" | "causal-lm" | "classifier" | "module" | "tensors"
    checkpoint: Path | None = None
    config: Any | None = None  # transformers PretrainedConfig
    tokenizer: Any | None = None
    compression: CompressionInfo | None = None
    notes: list[str] = field(default_factory=list)
    backend: dict | None = None  # the tool that made an ONNX-only model (compress.backends), if any
    spec: Any | None = None  # compress.usermodule.ModelSpec the module was built from (--module), if any

    @property
    def onnx_only(self) -> bool:
        """True for a model that exists only as an ONNX graph (its module runs it in ONNX Runtime)."""
        return self.checkpoint is not None and self.checkpoint.suffix == ".onnx"

    @property
    def runnable(self) -> bool:
        return self.module is not None

    @property
    def folder(self) -> Path | None:
        return self.checkpoint.parent if self.checkpoint else None

    @property
    def name(self) -> str:
        if self.checkpoint is None:
            return type(self.module).__name__
        folder_named = self.checkpoint.name in (WEIGHTS_NAME, "model.onnx")
        return self.checkpoint.parent.name if folder_named else self.checkpoint.name


def resolve_checkpoint(source: str | os.PathLike[str]) -> Path:
    """The weights file behind a path: the file itself, or `model.safetensors` in a folder."""
    path = Path(source)
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder.")
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if weights.exists():
            return weights
        if any(path.glob("model-*-of-*.safetensors")):
            raise Unsupported(
                f"{path}: holds a sharded checkpoint; compress reads single-file checkpoints for now."
            )
        pickles = [p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth"}]
        hint = f" (found {', '.join(pickles)}: pickle files are not read)" if pickles else ""
        raise BadInput(f"{path}: has no {WEIGHTS_NAME}{hint}.")
    return path


def load(source: Any, *, module: Any | None = None, progress=None) -> Model:
    """Load a checkpoint path, a folder, a `Model` or a `torch.nn.Module` as a `Model`.

    A checkpoint with `config.json` beside it becomes its transformers architecture. For a model
    defined in your own code, pass a fresh instance as `module` and the checkpoint (compressed or
    not) is loaded into it.

    Example:
        >>> import compress as cz
        >>> model = cz.load("all-MiniLM-L6-v2/model.safetensors")   # doctest: +SKIP
        >>> model.family, model.runnable                             # doctest: +SKIP
        ('encoder', True)
        >>> cnn = cz.load("out/cnn-int8", module=MyCNN())             # doctest: +SKIP
    """
    if isinstance(source, Model):
        return source
    import torch

    from compress.progress import resolve as resolve_progress

    progress = resolve_progress(progress)

    if isinstance(source, torch.nn.Module):
        return Model(module=source.eval(), family="module")
    if not isinstance(source, str | os.PathLike):
        raise BadInput(f"cannot load a {type(source).__name__}; give a path or a torch.nn.Module.")
    if module is None and is_onnx_only(source):  # a backend's output (compress.backends)
        return load_onnx_only(source)
    weights = resolve_checkpoint(source)
    file = SafetensorsFile(weights)
    info = read_compression_info(file.metadata, str(weights))
    resized = info.resized if info else {}
    if module is not None:
        tensors = decode(file.read_all(), info, str(weights))
        loaded, notes = load_into(
            module, tensors, str(weights), resized=resized, modes=activation_modes(info)
        )
        return Model(module=loaded, family="module", checkpoint=weights, compression=info, notes=notes)
    config = load_config(weights.parent)
    if config is None:
        return Model(module=None, family="tensors", checkpoint=weights, compression=info)
    if progress:
        progress.start(f"loading {weights.parent.name}", total=None)
    tensors = decode(file.read_all(), info, str(weights))
    module, notes = build_module(config, tensors, str(weights), resized=resized, modes=activation_modes(info))
    model = Model(
        module=module,
        family=family_of(config),
        checkpoint=weights,
        config=config,
        tokenizer=load_tokenizer(weights.parent),
        compression=info,
        notes=notes,
    )
    if progress:
        progress.done()
    return model


def load_config(folder: Path):
    """The transformers config in `folder`, or None when there is none."""
    path = folder / "config.json"
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path}: is not valid JSON ({exc}).") from None
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise BadInput(f"{path}: is not a transformers config (no model_type).")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder))
    except (ValueError, KeyError, OSError) as exc:
        raise Unsupported(f"{path}: transformers cannot read this config ({exc}).") from None


def load_tokenizer(folder: Path):
    if not any((folder / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def family_of(config) -> str:
    arch = (getattr(config, "architectures", None) or [""])[0]
    if "CausalLM" in arch or "LMHead" in arch:
        return "causal-lm"
    if "SequenceClassification" in arch or "ImageClassification" in arch:
        return "classifier"
    return "encoder"


def architecture_class(config):
    import transformers

    arch = (getattr(config, "architectures", None) or [None])[0]
    if arch and hasattr(transformers, arch):
        return getattr(transformers, arch)
    if arch:
        raise Unsupported(f"transformers {transformers.__version__} has no architecture '{arch}'.")
    return transformers.AutoModel._model_mapping[type(config)]


def build_module(config, tensors: dict, where: str, resized: dict | None = None, modes: dict | None = None):
    """Construct the architecture named in `config` and load every tensor into it."""
    return load_into(empty_architecture(config), tensors, where, config=config, resized=resized, modes=modes)


def activation_modes(info: CompressionInfo | None) -> dict[str, str]:
    """Stored weight name -> how its layer quantizes its input (dynamic, static), from the header.

    Headers of compress 0.1 kept the mode in the recipe's quantize pass only: it applies to every
    quantized Linear layer (static ones only where a range is stored), under the key "*".
    """
    if info is None:
        return {}
    modes = {name: meta["activations"] for name, meta in info.tensors.items() if meta.get("activations")}
    legacy = [p.get("activations", "none") for p in info.recipe if p.get("kind") == "quantize"]
    if not modes and legacy and legacy[-1] != "none":
        return {"*": legacy[-1]}
    return modes


def empty_architecture(config):
    """The architecture named in `config` with uninitialised weights (allocated, not yet resident)."""
    cls = architecture_class(config)
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        return cls(config)


def load_into(module, tensors: dict, where: str, config=None, resized: dict | None = None, modes=None):
    """Load plain and encoded tensors into `module`, replacing quantized layers; returns (module, notes).

    `resized` (from a structurally pruned checkpoint) names tensors stored smaller than the
    architecture builds them: they are shrunk to the stored shapes first. `modes` (stored weight
    name -> dynamic or static) says how a quantized Linear layer rounds its input.
    """
    from compress.formats.quantized import QuantizedTensor
    from compress.qmodules import ACTIVATION_PARTS, _QuantizedWeight, quantized_module
    from compress.resize import resize_to

    module.eval()
    label = type(module).__name__
    expected = set(module.state_dict())
    names = align_names(list(tensors), expected, getattr(module, "base_model_prefix", ""))
    if resized:
        resize_to(module, {names.get(n, n): shape for n, shape in resized.items()}, where)
    notes: list[str] = []
    floating = {n for n, t in module.state_dict().items() if t.is_floating_point()}
    plain = {}
    activation_parts: dict[str, Any] = {}
    loaded: set[str] = set()
    for stored, value in tensors.items():
        name = names[stored]
        if isinstance(value, QuantizedTensor):
            owner_name = name.removesuffix(".weight")
            try:
                owner = module.get_submodule(owner_name)
            except AttributeError:
                raise BadInput(
                    f"{where}: encoded weight '{stored}' has no layer '{owner_name}' in {label}."
                ) from None
            replace_module(module, owner_name, quantized_module(owner, value))
            loaded.add(name)
        elif name in expected:
            if name in floating and not value.is_floating_point():
                raise BadInput(
                    f"{where}: tensor '{stored}' holds {str(value.dtype).removeprefix('torch.')} values "
                    f"where {label} has a float parameter; these look like quantized codes whose compress "
                    "metadata (the compress.* header keys) is missing, so they cannot be loaded as weights."
                )
            plain[name] = value
        elif name.rpartition(".")[2] in ACTIVATION_PARTS:
            activation_parts[name] = value
        else:
            notes.append(f"ignored tensor '{stored}' (not used by {label})")
    buffers = {n for n, _ in module.named_buffers()}
    try:
        result = module.load_state_dict(plain, strict=False)
    except RuntimeError as exc:
        raise BadInput(f"{where}: does not fit {label}: {str(exc).splitlines()[-1].strip()}") from None
    loaded |= set(plain)
    loaded |= _tie(module, config, loaded) if config is not None else set()
    # After the ties: a Linear tied to an embedding table (lm_head) stores its input range of its own.
    _set_activations(module, activation_parts, modes or {}, names, where)
    quantized_parts = {
        f"{n}.{part}"
        for n, m in module.named_modules()
        if isinstance(m, _QuantizedWeight)
        for part in ("weight", "weight_scale", "weight_zero")
    }
    absent = [
        n for n in result.missing_keys if n not in loaded and n not in buffers and n not in quantized_parts
    ]
    if absent:
        shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
        raise BadInput(f"{where}: lacks {len(absent)} tensors that {label} needs ({shown}).")
    return module, notes


def _set_activations(module, parts: dict, modes: dict, names: dict, where: str) -> None:
    """A quantized Linear layer's activation tensors (after every quantized layer is in place) and
    how it rounds its input (see activation_modes)."""
    from compress.qmodules import QuantLinear, set_activation_mode

    for name, value in parts.items():
        owner_name, _, part = name.rpartition(".")
        try:
            owner = module.get_submodule(owner_name)
        except AttributeError:
            owner = None
        if not isinstance(owner, QuantLinear):
            raise BadInput(f"{where}: activation tensor '{name}' belongs to no quantized Linear layer.")
        owner.set_activation_parts(**{part: value})
    modes = dict(modes)
    if "*" in modes:  # a 0.1 header
        mode = modes.pop("*")
        for sub in module.modules():
            if isinstance(sub, QuantLinear) and (mode != "static" or sub.input_scale is not None):
                sub.activations = mode
    for stored, mode in modes.items():
        owner = module.get_submodule(names.get(stored, stored).removesuffix(".weight"))
        try:
            set_activation_mode(owner, mode)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"{where}: weight '{stored}': {exc} (corrupt compress metadata).") from None
    for name in parts:
        # A tied reader has no header entry of its own; only static layers store an input range.
        owner = module.get_submodule(name.rpartition(".")[0])
        if name.endswith(".input_scale") and owner.activations == "none":
            set_activation_mode(owner, "static")


def _tie(module, config, loaded: set[str]) -> set[str]:
    """Tie the weights the architecture ties and the checkpoint stored once; the names tied."""
    from compress.qmodules import _QuantizedWeight, quantized_module

    tied = set()
    for target, source in tied_weights(module, config):
        if target in loaded:
            continue  # stored separately: not tied in this checkpoint
        owner_t, owner_s = target.removesuffix(".weight"), source.removesuffix(".weight")
        src_module = module.get_submodule(owner_s)
        if isinstance(src_module, _QuantizedWeight):
            replace_module(
                module, owner_t, quantized_module(module.get_submodule(owner_t), src_module.qweight)
            )
        else:
            module.get_submodule(owner_t).weight = src_module.weight
        tied.add(target)
    return tied


def replace_module(root, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def tied_weights(module, config) -> list[tuple[str, str]]:
    """(target, source) parameter names that the architecture ties when the config asks for it."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if not getattr(text_config, "tie_word_embeddings", False):
        return []
    keys = getattr(module, "_tied_weights_keys", None) or {}
    if isinstance(keys, dict):  # transformers 5: {target: source}
        return list(keys.items())
    embeddings = module.get_input_embeddings()
    source = next(n for n, m in module.named_modules() if m is embeddings) + ".weight"
    return [(k, source) for k in keys]


def align_names(stored: list[str], expected: set[str], prefix: str) -> dict[str, str]:
    """Map checkpoint names to module names, adding or removing the base-model prefix if needed."""

    def hits(mapping: dict[str, str]) -> int:
        return sum(1 for v in mapping.values() if v in expected)

    identity = {n: n for n in stored}
    if not prefix:
        return identity
    strip = {n: n.removeprefix(prefix + ".") for n in stored}
    add = {n: n if n.startswith(prefix + ".") else f"{prefix}.{n}" for n in stored}
    return max((identity, strip, add), key=hits)


def is_onnx_only(source: Any) -> bool:
    """True for a `model.onnx` path, or a folder holding model.onnx and no model.safetensors."""
    if not isinstance(source, str | Path):
        return False
    path = Path(source)
    if path.is_file():
        return path.suffix == ".onnx"
    return path.is_dir() and (path / ONNX_NAME).is_file() and not (path / WEIGHTS_NAME).exists()


def load_onnx_only(source: str | Path, threads: int | None = None):
    """A Model for a folder holding model.onnx with config.json (and the tokenizer) beside it."""
    from compress.backends.onnx_only import read_record
    from compress.onnx.module import OrtModule

    path = Path(source)
    graph = path if path.is_file() else path / ONNX_NAME
    config = load_config(graph.parent)
    if config is None:
        raise BadInput(
            f"{graph}: has no config.json beside it; compress evaluates an ONNX graph with the "
            "config and tokenizer of the model it came from."
        )
    info, backend = read_record(graph)
    notes = []
    if backend:
        notes.append(
            f"the candidate is an ONNX graph made by {backend.get('name')} {backend.get('version')} "
            f"({backend.get('call')}); accuracy and latency come from ONNX Runtime"
        )
    try:
        module = OrtModule(graph, threads=threads)
    except Exception as exc:  # onnxruntime's errors carry the reason in their text
        raise BadInput(f"{graph}: ONNX Runtime cannot load this graph ({str(exc).strip()[-300:]}).") from None
    return Model(
        module=module,
        family=family_of(config),
        checkpoint=graph,
        config=config,
        tokenizer=load_tokenizer(graph.parent),
        compression=info,
        notes=notes,
        backend=backend,
    )
