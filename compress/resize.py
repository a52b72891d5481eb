"""Replacing a module's parameters and buffers with tensors of another shape.

Structural pruning shrinks tensors in place of the originals; the loader shrinks a freshly built
architecture to the shapes a pruned checkpoint declares (header key `compress.resized`) before it
loads the weights. Both keep the size attributes of standard layers (in_features, out_channels,
num_features, ...) in step with their weights, so the model prints and exports truthfully.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from compress.errors import BadInput


def get_tensor(root, name: str):
    """A parameter or buffer of `root` by its state_dict name."""
    owner_name, _, attr = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    if attr in owner._parameters:
        return owner._parameters[attr]
    if attr in owner._buffers:
        return owner._buffers[attr]
    raise AttributeError(name)


def set_tensor(root, name: str, value) -> None:
    """Put `value` where the parameter or buffer `name` is (a parameter stays a parameter)."""
    from torch import nn

    owner_name, _, attr = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    if attr in owner._parameters:
        old = owner._parameters[attr]
        grad = old.requires_grad if old is not None else False
        owner._parameters[attr] = value if isinstance(value, nn.Parameter) else nn.Parameter(value, grad)
    elif attr in owner._buffers:
        owner._buffers[attr] = value
    else:
        raise AttributeError(name)
    sync_size_attributes(owner)


def sync_size_attributes(module) -> None:
    """Make a standard layer's size attributes agree with its (resized) weight."""
    from torch import nn

    weight = getattr(module, "weight", None)
    if isinstance(module, nn.Linear) and weight is not None and weight.dim() == 2:
        module.out_features, module.in_features = weight.shape
    elif isinstance(module, nn.modules.conv._ConvNd) and weight is not None and not module.transposed:
        module.out_channels, module.in_channels = weight.shape[0], weight.shape[1] * module.groups
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        ref = weight if weight is not None else module.running_mean
        if ref is not None:
            module.num_features = ref.shape[0]
    elif isinstance(module, nn.Embedding) and weight is not None:
        module.num_embeddings, module.embedding_dim = weight.shape


def resize_to(root, shapes: Mapping[str, Sequence[int]], where: str) -> None:
    """Give each named tensor of `root` the declared shape (uninitialised; the loader fills it)."""
    import torch

    for name, shape in shapes.items():
        try:
            current = get_tensor(root, name)
        except AttributeError:
            raise BadInput(
                f"{where}: declares pruned tensor '{name}', which {type(root).__name__} does not have."
            ) from None
        if current is None or tuple(current.shape) == tuple(shape):
            continue
        set_tensor(root, name, torch.empty(tuple(shape), dtype=current.dtype, device=current.device))
