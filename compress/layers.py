"""Finding the layers a pass can target, in a live module or in a checkpoint on disk.

Tied weights (an output head sharing the input embedding's matrix) belong to several layers; a
pass changes such a weight only when every layer that owns it is targeted, so asking for Linear
layers alone never quantizes an embedding behind the user's back.
"""

from __future__ import annotations

from collections import defaultdict

from compress.checkpoint import SafetensorsFile
from compress.model import align_names, architecture_class, load_config, tied_weights
from compress.qmodules import module_kind
from compress.targets import Layer, Targets


def module_layers(module) -> list[Layer]:
    """Every Linear/Embedding/Conv in a live module, once per owner of each weight."""
    layers = []
    for name, m in module.named_modules(remove_duplicate=False):
        kind = module_kind(m)
        if kind is not None and name:
            layers.append(Layer(name=name, type=kind, weight=f"{name}.weight"))
    return layers


def weight_groups(module) -> dict[int, list[str]]:
    """Layer names grouped by the identity of the weight tensor they use (ties share one group)."""
    groups: dict[int, list[str]] = defaultdict(list)
    for layer in module_layers(module):
        w = module.get_submodule(layer.name).weight
        groups[id(w)].append(layer.name)
    return groups


def select_module_layers(module, targets: Targets, where: str) -> list[list[str]]:
    """Groups of layer names to change together: each group shares one weight, all its owners targeted."""
    chosen = {layer.name for layer in targets.select(module_layers(module), where)}
    return [names for names in weight_groups(module).values() if all(n in chosen for n in names)]


def checkpoint_layers(file: SafetensorsFile, skeleton=None) -> list[Layer]:
    """Candidate layers of a checkpoint, typed from its architecture: `skeleton` (the module it loads
    into, --module), else the one its config names (built on the meta device: its structure, no
    memory and no weights). Without either, every floating tensor of two or more dimensions is a
    candidate of unknown type; an empty one (a zero-size dimension) is not: there is nothing in it
    to compress.
    """
    config = None
    if skeleton is None:
        config = load_config(file.path.parent)
        if config is None:
            return [
                Layer(name=n.removesuffix(".weight"), type=None, weight=n)
                for n, info in file.tensors.items()
                if info.is_float and len(info.shape) >= 2 and info.numel > 0
            ]
        import torch

        with torch.device("meta"):
            skeleton = architecture_class(config)(config)
    prefix = getattr(skeleton, "base_model_prefix", "")
    to_module = align_names(file.names(), set(skeleton.state_dict()), prefix)
    to_file = {v: k for k, v in to_module.items()}
    for target, source in tied_weights(skeleton, config) if config is not None else []:
        if target not in to_file and source in to_file:
            to_file[target] = to_file[source]
    layers = []
    for name, m in skeleton.named_modules():
        kind = module_kind(m)
        stored = to_file.get(f"{name}.weight")
        if kind is not None and stored is not None:
            layers.append(Layer(name=name, type=kind, weight=stored))
    return layers


def select_checkpoint_tensors(
    file: SafetensorsFile, targets: Targets, where: str, skeleton=None
) -> dict[str, str | None]:
    """Stored weight name -> layer type, for the weights all of whose owners are targeted
    (`skeleton`: the module the checkpoint loads into, when it is the user's own class)."""
    layers = checkpoint_layers(file, skeleton)
    chosen = {(layer.name, layer.weight) for layer in targets.select(layers, where)}
    owners: dict[str, list[Layer]] = defaultdict(list)
    for layer in layers:
        owners[layer.weight].append(layer)
    return {
        weight: group[0].type
        for weight, group in owners.items()
        if all((layer.name, layer.weight) in chosen for layer in group)
    }
