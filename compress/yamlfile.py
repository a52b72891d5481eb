"""YAML with line numbers: parse a file into plain data plus where each key sits, so a validation
error can say "recipe.yaml, line 7: ..." instead of leaving the user to search.

PyYAML's composer keeps a start mark on every node; we walk the node tree once and record the line
of each setting under a dotted path ('passes[0].targets.include'). Duplicate keys, which PyYAML
would silently resolve to the last one, are refused.

Anchors and aliases (&name, *name) are refused too. An alias is the same node again, so any walk
over the data (the line walk here, a message that shows a value, a hash of the recipe) expands it:
nine levels of nine aliases, 400 bytes of YAML, become 387 million nodes. Bounding every such walk
would be fragile; a recipe is a short file that loses nothing by writing its settings out.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from compress.errors import BadInput

# A message that starts with a setting's path, as compress.config labels them: "passes[0].scheme: ...".
_LABEL = re.compile(r"^(?P<path>[A-Za-z_][\w-]*(?:\[\d+\])*(?:\.[\w-]+(?:\[\d+\])*)*): ")
_UNKNOWN_KEY = re.compile(r"unknown setting '(?P<key>[^']+)'")


class Located:
    """Parsed YAML data and the 1-based line of every path in it."""

    def __init__(self, data: Any, lines: dict[str, int], source: str):
        self.data = data
        self.lines = lines
        self.source = source

    def line(self, path: str) -> int | None:
        """The line of `path`, or of its nearest enclosing setting that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = _parent(path)
        return None

    def error(self, path: str, message: str) -> BadInput:
        """A BadInput that names the file and the line of `path`."""
        line = self.line(path)
        where = f"{self.source}, line {line}" if line else self.source
        return BadInput(f"{where}: {message}")

    def relocate(self, exc: BadInput, default_path: str) -> BadInput:
        """Prefix a validation error with the line of the setting it names (else of `default_path`)."""
        message = str(exc)
        path = default_path
        label = _LABEL.match(message)
        if label and self.line(label["path"]) is not None and label["path"].startswith(default_path):
            path = label["path"]
            unknown = _UNKNOWN_KEY.search(message)
            if unknown and f"{path}.{unknown['key']}" in self.lines:
                path = f"{path}.{unknown['key']}"
        return self.error(path, message)


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


@functools.cache
def _loader_class():
    import yaml

    class Loader(yaml.SafeLoader):
        source = ""

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            _no_aliases(self, self.source)
            return super().compose_node(parent, index)

    return Loader


def load_yaml(text: str, source: str) -> Located:
    """Parse YAML text; syntax errors and duplicate keys become BadInput with the line."""
    import yaml

    try:
        loader = _loader_class()(text)
        loader.source = source
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise BadInput(f"{where}: YAML syntax error: {problem}.") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{source}: YAML syntax error: {exc}.") from None
    lines: dict[str, int] = {}
    if node is not None:
        _walk(node, "", lines, source)
    return Located(data, lines, source)


def _no_aliases(loader, source: str) -> None:
    """BadInput at the first anchor or alias (see the module docstring)."""
    import yaml

    event = loader.peek_event()
    if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
        sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
        raise BadInput(
            f"{source}, line {event.start_mark.line + 1}: YAML anchors and aliases ({sign}{event.anchor}) "
            "are not accepted in recipes, because an alias can expand exponentially; write the settings "
            "out in full."
        )


def load_yaml_file(path: str | Path) -> Located:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{p}: no such file.") from None
    except IsADirectoryError:
        raise BadInput(f"{p}: is a folder, expected a YAML file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{p}: cannot be read as text ({exc}).") from None
    return load_yaml(text, str(p))


def _walk(node, path: str, lines: dict[str, int], source: str) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise BadInput(f"{source}, line {line}: duplicate key '{key}' (first at line {seen[key]}).")
            seen[key] = line
            child = f"{path}.{key}" if path else key
            lines[child] = line
            _walk(value_node, child, lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{path}[{i}]"
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, source)
