"""What every command shares: errors and exit codes, progress on stderr, evaluation options, output."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from compress.errors import CompressError

# stdout carries data (--json -); stderr carries status, tables and progress.
stderr = Console(stderr=True, highlight=False)


DEBUG_ENV = "COMPRESS_DEBUG"  # set to 1: an internal error prints its traceback
INTERNAL_ERROR = 3  # exit code of a bug in compress: never 1, which says "gate failed"
# Errors of the machine, not of compress: exit 2 with the path and the reason.
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EPIPE}


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the process is, so every cleanup runs as it does after Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def handle_errors(fn: Callable) -> Callable:
    """Exit codes: 0 ok; 1 gate failed (the command exits so itself); 2 bad input, one sentence;
    3 internal error, one line (COMPRESS_DEBUG=1 prints the traceback); 130 on Ctrl-C and 128 + the
    signal's number on SIGTERM / SIGHUP, which clean up as Ctrl-C does. Whatever the exit, the
    exception has unwound every atomic output first, so nothing partial is left behind."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _signals_interrupt():
            try:
                return fn(*args, **kwargs)
            except CompressError as exc:
                _fail(f"[bold red]error:[/] {escape(str(exc))}", exc.exit_code)
            except Terminated as exc:
                name = signal.Signals(exc.signum).name
                _fail(f"[yellow]terminated[/] ({name}): nothing partial was left behind.", 128 + exc.signum)
            except KeyboardInterrupt:
                _fail("[yellow]interrupted[/]: nothing partial was left behind.", 130)
            except (click.ClickException, click.exceptions.Exit, click.Abort):
                raise  # usage errors: click prints them (exit 2)
            except OSError as exc:
                if exc.errno not in _ENVIRONMENT_ERRNOS:
                    _internal_error(exc)
                _fail(f"[bold red]error:[/] {escape(_os_error_sentence(exc))}", 2)
            except Exception as exc:
                _internal_error(exc)

    return wrapper


def _fail(message: str, code: int) -> None:
    stderr.print(message, soft_wrap=True, emoji=False)  # "file.py:Boom:" is not the :boom: emoji
    sys.exit(code)


def _internal_error(exc: BaseException) -> None:
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(exc)
    text = (str(exc).strip().splitlines() or [""])[0]
    _fail(
        f"[bold red]internal error:[/] {escape(type(exc).__name__)}{': ' if text else ''}{escape(text)} "
        f"(a bug in compress; run again with {DEBUG_ENV}=1 to see the traceback, and report it).",
        INTERNAL_ERROR,
    )


def _os_error_sentence(exc: OSError) -> str:
    reason = (exc.strerror or str(exc)).lower()
    if not exc.filename:
        return f"cannot write the output: {reason}."
    # A private staging name (.model.safetensors.abc123.partial) means the output it stands for.
    path = re.sub(r"(^|/)\.([^/]+?)\.(?:partial-[^/]*|[^./]+\.partial)(?=/|$)", r"\1\2", str(exc.filename))
    if exc.errno == errno.EACCES and os.path.exists(path) and not os.access(path, os.R_OK):
        return f"cannot read {path}: {reason}."
    return f"cannot write to {path}: {reason}."


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP raise Terminated (a KeyboardInterrupt) in the main thread."""
    names = ("SIGTERM", "SIGHUP")
    signals = [getattr(signal, n) for n in names if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: Any) -> None:
        for s in signals:  # once: a second signal must not cut the cleanup short
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {s: signal.signal(s, interrupt) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class RichProgress:
    """Renders compress.progress.Progress calls as a rich progress bar on stderr."""

    def __init__(self, console: Console = stderr):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = None
        self._description = ""

    def start(self, description: str, total: int | None = None) -> None:
        self.done()
        self._progress.start()
        self._description = description
        self._task = self._progress.add_task(description, total=total)

    def status(self, text: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, description=f"{self._description} · {text}")

    def advance(self, steps: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, steps)

    def done(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        self._progress.stop()


def make_progress(quiet: bool):
    """A rich progress bar on an interactive terminal; plain text (no escape codes) when a command
    runs inside a Jupyter kernel; nothing with -q or when stderr is a log file or pipe.

    The terminal test is isatty(), not rich's: Jupyter sets FORCE_COLOR=1 for the commands a notebook
    runs (`!compress ...`), and rich would then draw its bar with cursor-movement codes that a
    notebook prints as garbage. Colours (which Jupyter renders) are left to rich.
    """
    from compress.progress import NoProgress, TextProgress, in_notebook

    if quiet:
        return NoProgress()
    if in_notebook():
        return TextProgress()
    return RichProgress() if _isatty(sys.stderr) else NoProgress()


def _isatty(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


def split_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bars or tables on stderr.")
json_option = click.option(
    "--json", "json_path", metavar="PATH", help="Write the report as JSON to PATH ('-' for stdout)."
)


history_options = [
    click.option(
        "--history",
        "history_path",
        metavar="PATH",
        envvar="COMPRESS_HISTORY",
        default=".compress/history.db",
        show_default=True,
        help="Results history database (SQLite) that every report is appended to [env: COMPRESS_HISTORY].",
    ),
    click.option("--no-history", is_flag=True, help="Do not record this run in the history database."),
]


module_options = [
    click.option(
        "--module",
        "module_spec",
        metavar="FILE.py:CLASS|PKG.MOD:CLASS",
        help="Load the checkpoint into this class of your own code (a torch.nn.Module), as "
        "compress.load(path, module=CLASS(**args)) does: for a .safetensors without config.json. "
        "This imports and runs that code: name only code you trust.",
    ),
    click.option(
        "--module-arg",
        "module_args",
        multiple=True,
        metavar="NAME=VALUE",
        help="A keyword argument of --module's class (repeatable); VALUE is read as YAML: 16, 0.5, "
        "true, [1, 2], or text.",
    ),
]


def with_module_options(fn: Callable) -> Callable:
    for option in reversed(module_options):
        fn = option(fn)
    return fn


def model_spec(opts: dict):
    """The ModelSpec that --module and --module-arg name (popped from `opts`), or None."""
    from compress.errors import BadInput
    from compress.usermodule import ModelSpec, parse_args

    spec, args = opts.pop("module_spec", None), opts.pop("module_args", ())
    if spec is None:
        if args:
            raise BadInput("--module-arg: give the class it is for with --module FILE.py:ClassName.")
        return None
    if not spec.rpartition(":")[2].isidentifier():
        raise BadInput(f"--module {spec}: name a class, as FILE.py:ClassName or package.module:ClassName.")
    return ModelSpec(module=spec, args=parse_args(args))


def open_history(opts: dict, check: bool = False):
    """The History the options name, or None with --no-history; `check` opens it now, so a locked
    or corrupt database fails before any work rather than after it."""
    from compress.history import History

    history = None if opts.get("no_history") else History(opts["history_path"])
    if history is not None and check:
        history.check()
    return history


def eval_options(fn: Callable) -> Callable:
    """Options of the evaluator, shared by every command that evaluates."""
    options = [
        click.option(
            "--task",
            default="auto",
            show_default=True,
            help="Accuracy task: auto, classification, embedding, causal-lm, fidelity.",
        ),
        click.option(
            "--data",
            metavar="PATH|NAME",
            help="Evaluation data: .jsonl/.csv (text, label; or text1, text2, score), .npz arrays, "
            ".txt, or built-in spam / wiki.",
        ),
        click.option("--limit", type=int, metavar="N", help="Use at most N rows per split (quick runs)."),
        click.option("--text-column", default="text", show_default=True, help="Text column of --data."),
        click.option("--label-column", default="label", show_default=True, help="Label column of --data."),
        click.option(
            "--device",
            "devices",
            default="cpu,cuda",
            show_default=True,
            help="Devices to time on, comma-separated; an absent GPU is reported as unavailable.",
        ),
        click.option(
            "--runtime",
            "runtimes",
            default="torch",
            show_default=True,
            help="Runtimes to time, comma-separated: torch, onnxruntime, openvino (graphs exported and "
            "checked against torch first).",
        ),
        click.option("--batch-size", type=int, default=8, show_default=True, help="Latency batch size."),
        click.option("--seq-len", type=int, default=128, show_default=True, help="Latency sequence length."),
        click.option("--threads", type=int, help="CPU threads for latency (default: torch's setting)."),
        click.option(
            "--budget",
            type=float,
            default=30.0,
            show_default=True,
            help="Seconds of timing per device and runtime, at most.",
        ),
        click.option(
            "--window", type=int, default=512, show_default=True, help="causal-lm: tokens per window."
        ),
        click.option("--stride", type=int, help="causal-lm: tokens the window advances (default: window)."),
        click.option(
            "--max-tokens",
            type=int,
            default=8192,
            show_default=True,
            help="causal-lm: tokens of the text scored, at most.",
        ),
        click.option(
            "--markdown", "markdown_path", metavar="PATH", help="Write the report as Markdown to PATH."
        ),
        *history_options,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def evaluation_from_options(opts: dict):
    """The recipe's evaluation section from the evaluator's command-line options."""
    from compress.eval.latency import LatencySettings
    from compress.eval.tasks import TaskOptions
    from compress.recipe import Evaluation

    return Evaluation(
        task=opts["task"],
        data=opts["data"],
        limit=opts["limit"],
        runtimes=split_list(opts["runtimes"]),
        devices=split_list(opts["devices"]),
        latency=LatencySettings(
            batch_size=opts["batch_size"],
            seq_len=opts["seq_len"],
            threads=opts["threads"],
            budget_s=opts["budget"],
        ),
        task_options=TaskOptions(
            window=opts["window"],
            stride=opts["stride"],
            max_tokens=opts["max_tokens"],
            text_column=opts["text_column"],
            label_column=opts["label_column"],
        ),
    )


def evaluate_from_options(candidate: Any, baseline: Any, opts: dict, progress) -> Any:
    """`compress eval`: the evaluation the options describe, recorded in the history they name."""
    from compress.eval import evaluate

    history = open_history(opts, check=True)
    arguments = evaluation_from_options(opts).arguments()
    report = evaluate(candidate, baseline, **arguments, progress=progress, history=None)
    if history is not None:
        history.append(report, command="eval")
    return report


def write_text(path: str, text: str) -> None:
    """Write to stdout for '-', else atomically to a file."""
    if path == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    from compress.checkpoint import atomic_file

    with atomic_file(Path(path)) as tmp:
        tmp.write_text(text)


def emit_report(report: Any, json_path: str | None, quiet: bool, markdown_path: str | None = None) -> None:
    from compress.cli.render import report_table

    if not quiet:
        stderr.print(report_table(report))
        for note in report.notes:
            stderr.print(f"[dim]- {note}[/]", soft_wrap=True)
    if json_path:
        write_text(json_path, report.to_json() + "\n")
    if markdown_path:
        write_text(markdown_path, report.to_markdown())
