"""Students: a smaller copy of the teacher (every k-th layer kept), and which layers to compare.

A layer-dropped copy keeps `n` of the teacher's `L` transformer layers, evenly spaced and always
including the last one (layer round((i + 1) * L / n) - 1 for i < n: 1, 3, 5 of 6), initialised
from the teacher. Its config says `num_hidden_layers = n` (and per-layer lists such as Gemma's
`layer_types` keep the same entries), checked by building the architecture from it, so it saves
and loads back as a smaller model of the same family.
"""

from __future__ import annotations

import copy

from compress.errors import BadInput


def layer_stack(module) -> tuple[str, object]:
    """The name and ModuleList of the transformer layers: the one list as long as the config says."""
    from torch import nn

    config = getattr(module, "config", None)
    count = getattr(config, "num_hidden_layers", None) if config is not None else None
    if count is None:
        raise BadInput(
            f"distill: a {type(module).__name__} has no num_hidden_layers in its config, so no layers "
            "can be dropped (student_layers works on transformers models)."
        )
    stacks = [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) == count and name
    ]
    if len(stacks) != 1:
        found = ", ".join(n for n, _ in stacks) or "none"
        raise BadInput(
            f"distill: cannot tell which list holds the {count} layers of a {type(module).__name__} "
            f"(lists of that length: {found})."
        )
    return stacks[0]


def evenly_spaced(total: int, keep: int) -> list[int]:
    """`keep` of `total` layer indices, evenly spaced, ending with the last layer."""
    return [round((i + 1) * total / keep) - 1 for i in range(keep)]


def drop_layers(module, keep: int):
    """Keep `keep` evenly spaced transformer layers of `module` (in place).

    Returns the config (a copy with the smaller layer count, checked by building the architecture
    from it), the kept teacher indices, and the tensors still smaller than that config builds them
    (a pruned student), which the checkpoint must declare."""
    from torch import nn

    from compress.passes.prune.rebuild import mismatches

    name, stack = layer_stack(module)
    total = len(stack)
    if not 1 <= keep < total:
        raise BadInput(
            f"distill.student_layers: {keep} must be between 1 and {total - 1} (the model has {total})."
        )
    kept = evenly_spaced(total, keep)
    new_stack = nn.ModuleList([stack[i] for i in kept])
    for index, layer in enumerate(new_stack):
        for sub in layer.modules():
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.layer_idx = index  # caches are indexed by position in the stack
    parent_name, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent_name) if parent_name else module, attr, new_stack)
    old = module.config
    config = copy.deepcopy(old)
    for key, value in config.to_dict().items():
        if isinstance(value, list) and len(value) == total and key != "architectures":
            setattr(config, key, [value[i] for i in kept])
    config.num_hidden_layers = keep
    for sub in module.modules():  # submodules hold the same config object
        if getattr(sub, "config", None) is old:
            sub.config = config
    actual = {n: tuple(t.shape) for n, t in module.state_dict().items()}
    wrong = mismatches(config, actual)
    if wrong is None:
        raise BadInput(
            f"distill: a {type(module).__name__} built with {keep} layers does not have the layer-dropped "
            "model's tensors; this architecture cannot be shortened this way."
        )
    return config, kept, wrong


def layer_pairs(student, teacher, given: tuple[str, ...], kept: list[int] | None) -> list[tuple[str, str]]:
    """(student module, teacher module) names whose outputs the hidden-state loss compares.

    Given as 'student_name:teacher_name' (or one name for both); by default each transformer layer
    of the student with the teacher layer it came from (or the evenly spaced one of the same depth)."""
    s_names = {n for n, _ in student.named_modules()}
    t_names = {n for n, _ in teacher.named_modules()}
    if given:
        pairs = []
        for item in given:
            s, _, t = item.partition(":")
            s, t = s.strip(), (t or s).strip()
            for name, names, who in ((s, s_names, "student"), (t, t_names, "teacher")):
                if name not in names:
                    raise BadInput(
                        f"distill.layer_pairs: '{item}' names '{name}', which the {who} does not have; "
                        f"{_examples(names)}."
                    )
            pairs.append((s, t))
        return pairs
    try:
        s_stack, s_layers = layer_stack(student)
        t_stack, t_layers = layer_stack(teacher)
    except BadInput:
        return []  # not a transformer: no default pairs (the logits and embeddings still teach)
    if kept is None or len(kept) != len(s_layers):
        kept = evenly_spaced(len(t_layers), len(s_layers))
    return [(f"{s_stack}.{i}", f"{t_stack}.{j}") for i, j in enumerate(kept)]


def _examples(names: set[str]) -> str:
    shown = sorted((n for n in names if n), key=lambda n: (n.count("."), n))[:5]
    return "modules look like: " + ", ".join(shown) if shown else "it has no named modules"
