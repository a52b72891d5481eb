"""A model defined in the user's own code, named so the command line and a recipe can build it.

`ModelSpec(module="digits_cnn.py:DigitsCNN", args={"width": 16})` is the recipe's `model:` section
and the CLI's `--module digits_cnn.py:DigitsCNN --module-arg width=16`. It names a class by a
Python file (`path/to/file.py:ClassName`, the path relative to the working directory) or an
importable module (`package.module:ClassName`), with the keyword arguments of its constructor.
A checkpoint is loaded into a fresh instance, exactly as `compress.load(path, module=Class(**args))`
does in Python, so a bare `.safetensors` gets the full passes, tasks and latency.

Building one runs the user's code (the file is imported as Python would): name only code you trust.
Everything that can go wrong (no such file or module, no such class, a class that is not a
torch.nn.Module, an error in the file or the constructor, a checkpoint whose tensor names or shapes
do not fit the module) is one sentence (BadInput), raised before any pass runs.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.config import Settings
from compress.errors import BadInput

_PLAIN = (str, int, float, bool, type(None))
_CLASSES: dict[tuple, type] = {}  # (spec text, file, mtime) -> the imported class, once per process


@dataclass(frozen=True, kw_only=True)
class ModelSpec(Settings):
    """module: 'path/to/file.py:ClassName' or 'package.module:ClassName'.
    args: keyword arguments of the class (numbers, text, true/false, lists, mappings)."""

    module: str = ""
    args: dict = field(default_factory=dict)

    def validate(self) -> None:
        source, _, name = self.module.rpartition(":")
        if not source or not name.isidentifier():
            raise BadInput(
                f"model.module: '{self.module}' must name a class as FILE.py:ClassName or "
                "package.module:ClassName."
            )
        if not isinstance(self.args, dict) or not all(isinstance(k, str) for k in self.args):
            raise BadInput("model.args: give the class's keyword arguments as a mapping of names to values.")
        for key, value in self.args.items():
            if not _plain(value):
                raise BadInput(f"model.args.{key}: {value!r} is not a number, text, true/false or a list.")

    @property
    def class_name(self) -> str:
        return self.module.rpartition(":")[2]

    @property
    def is_file(self) -> bool:
        source = self.module.rpartition(":")[0]
        return source.endswith(".py") or "/" in source or "\\" in source

    def describe(self) -> str:
        return f"{self.describe_call()} from {self.module.rpartition(':')[0]}"

    def build(self):
        """A fresh instance of the class (its weights as its constructor leaves them)."""
        cls = self.class_()
        try:
            instance = cls(**self.args)
        except (Exception, SystemExit) as exc:  # the user's constructor: any error is theirs to fix
            raise BadInput(f"{self.module}: {self.describe_call()} failed ({_first_line(exc)}).") from None
        return instance.eval()

    def describe_call(self) -> str:
        return f"{self.class_name}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"

    def class_(self) -> type:
        """The class the spec names, imported once per process (again when its file changes)."""
        import inspect

        import torch

        source = self.module.rpartition(":")[0]
        path = Path(source) if self.is_file else None
        if path is not None and not path.is_file():
            raise BadInput(f"{self.module}: {source}: no such file.")
        key = (self.module, str(path.resolve()) if path else None, path.stat().st_mtime_ns if path else None)
        if key not in _CLASSES:
            module = (
                _import_file(path, self.module) if path is not None else _import_module(source, self.module)
            )
            cls = getattr(module, self.class_name, None)
            if cls is None:
                found = sorted(
                    n
                    for n, v in vars(module).items()
                    if inspect.isclass(v)
                    and issubclass(v, torch.nn.Module)
                    and v.__module__ == module.__name__
                )
                shown = f" (torch.nn.Module classes there: {', '.join(found)})" if found else ""
                raise BadInput(f"{self.module}: {source} has no class '{self.class_name}'{shown}.")
            if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
                raise BadInput(f"{self.module}: '{self.class_name}' is not a torch.nn.Module class.")
            _CLASSES[key] = cls
        return _CLASSES[key]

    def code_sha256(self) -> str:
        """The sha256 of the file that defines the class ('' when it has none): a step's cache key
        includes it, so changed code re-runs the passes."""
        import inspect

        from compress.checkpoint import sha256_file

        try:
            source = inspect.getsourcefile(self.class_())
        except TypeError:  # a class with no source file (built in C, or made at run time)
            return ""
        return sha256_file(Path(source)) if source and Path(source).is_file() else ""

    def load(self, source: Any, progress=None):
        """A checkpoint (a file or its folder) loaded into a fresh instance, as compress.load(source,
        module=...) does, after checking that its tensors fit."""
        from compress.model import load, resolve_checkpoint

        weights = resolve_checkpoint(source)
        model = load(weights, module=self.check_fits(weights), progress=progress)
        model.spec = self
        return model

    def check_fits(self, weights: Path):
        """Refuse, before any work, a checkpoint whose tensor names or shapes do not fit the module
        (read from the file's header; no tensor data is read). Returns the module built to check."""
        from compress.checkpoint import SafetensorsFile

        module = self.build()
        stored = stored_shapes(SafetensorsFile(weights), str(weights))
        problem = misfit(module, *stored)
        if problem:
            raise BadInput(f"{weights}: does not fit {self.describe_call()}: {problem}.")
        return module


def stored_shapes(file, where: str) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """(logical tensor name -> shape, names declared resized) from a checkpoint's header: an encoded
    weight by its own shape (its stored parts are not tensors of the module)."""
    from compress.formats import CODECS, read_compression_info
    from compress.qmodules import ACTIVATION_PARTS

    info = read_compression_info(file.metadata, where)
    shapes: dict[str, tuple[int, ...]] = {}
    parts: set[str] = set()
    for name, meta in (info.tensors if info else {}).items():
        parts.update(CODECS[meta["scheme"]].part_names(name, meta))
        shapes[name] = tuple(meta["shape"])
    for name, tensor in file.tensors.items():
        if name not in parts and name.rpartition(".")[2] not in ACTIVATION_PARTS:
            shapes.setdefault(name, tuple(tensor.shape))
    return shapes, set(info.resized) if info else set()


def misfit(module, stored: dict[str, tuple[int, ...]], resized: set[str]) -> str:
    """What keeps a checkpoint's tensors from loading into `module` ('' when they fit): tensors it
    lacks, tensors it has that the module does not, shapes that differ."""
    from compress.model import align_names

    state = module.state_dict()
    buffers = {n for n, _ in module.named_buffers()}
    names = align_names(list(stored), set(state), getattr(module, "base_model_prefix", ""))
    loaded = set(names.values())
    problems = []
    missing = [n for n in state if n not in loaded and n not in buffers]
    if missing:
        problems.append(f"the checkpoint lacks {_few(missing)}")
    unexpected = [s for s in stored if names[s] not in state]
    if unexpected:
        problems.append(f"the module has no tensor {_few(unexpected)}")
    wrong = [
        f"{s} is {list(shape)} in the checkpoint but {list(state[names[s]].shape)} in the module"
        for s, shape in stored.items()
        if names[s] in state and s not in resized and tuple(state[names[s]].shape) != shape
    ]
    if wrong:
        problems.append(_few(wrong))
    return "; ".join(problems)


def parse_args(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`--module-arg KEY=VALUE` options as keyword arguments; VALUE is read as YAML (16 is a
    number, true a boolean, [1, 2] a list, anything else text)."""
    from compress.yamlfile import load_yaml

    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise BadInput(f"--module-arg {pair!r}: give NAME=VALUE (for example width=16).")
        if key in args:
            raise BadInput(f"--module-arg: '{key}' is given twice.")
        value = load_yaml(text, f"--module-arg {key}").data if text.strip() else ""
        args[key] = value
    return args


def _import_file(path: Path, label: str):
    """Import a Python file as a module of its own name (its folder on sys.path while it runs, so
    it can import the files beside it, as `python file.py` would)."""
    import importlib.util

    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"compress_user_{digest}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BadInput(f"{label}: {path} is not a Python file that can be imported.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's code: any error is theirs to fix
        sys.modules.pop(name, None)
        raise BadInput(f"{label}: running {path} failed ({_first_line(exc)}).") from None
    finally:
        sys.path.remove(folder)
    return module


def _import_module(name: str, label: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise BadInput(
            f"{label}: no module named '{exc.name}' (is it installed, or on PYTHONPATH?)."
        ) from None
    except (Exception, SystemExit) as exc:
        raise BadInput(f"{label}: importing {name} failed ({_first_line(exc)}).") from None


def _plain(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return isinstance(value, _PLAIN)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _few(items: list[str], shown: int = 3) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
