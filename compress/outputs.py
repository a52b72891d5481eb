"""What every output shares: one writer per output path at a time, whole-folder replacement, and
the user's umask.

`output_lock(path)` takes an advisory lock (fcntl.flock) on a hidden file beside the output, so a
second compress process writing the same output is refused with one sentence instead of both
"winning". The lock is re-entrant within a process: a command may hold it around writing and
evaluating its output while the writer inside takes it again. The lock file records the holder's pid
and is removed when the lock is released.

An output folder is replaced as a whole (`swap_in`): no file of an older output survives into the
new one. Only a folder compress wrote (its checkpoint or graph carries compress's header record) or
an empty one is replaced; any other existing folder is refused, so `-o .` cannot wipe a project.

Temporary files and folders are created private (mkstemp, mkdtemp: 0600, 0700); `publish_mode`
gives them the mode an ordinary open() would have given under the user's umask before they are
renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from compress.errors import BadInput

FORMAT_KEY = "compress.format_version"  # in the header of every checkpoint compress writes
_held: dict[str, int] = {}  # lock path -> depth, for the locks this process holds
_guard = threading.Lock()


def lock_path(output: Path) -> Path:
    output = Path(os.path.abspath(output))
    return output.parent / f".{output.name}.lock"


@contextlib.contextmanager
def output_lock(output: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the write lock of `output` (a file or folder path) for the block; BadInput when another
    process holds it."""
    path = lock_path(Path(output))
    key = str(path)
    with _guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    fd = _acquire(path, Path(output))
    with _guard:
        _held[key] = 1
    try:
        yield
    finally:
        with _guard:
            del _held[key]
        _release(path, fd)


def _acquire(path: Path, output: Path) -> int | None:
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no advisory locks; the atomic rename still holds
        return None
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            raise BadInput(f"cannot write to {output}: permission denied.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise BadInput(
                f"{output}: is being written by another compress process (pid {holder}); wait for it "
                "to finish or choose another output."
            ) from None
        # The holder we waited on may have removed the file after we opened it: lock the live file.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _release(path: Path, fd: int | None) -> None:
    if fd is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # while still locked, so no other process can hold this file meanwhile
    os.close(fd)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP for a few system calls that must not be split (main thread)."""
    main = threading.current_thread() is threading.main_thread()
    if not (main and hasattr(signal, "pthread_sigmask")):  # Windows: no signal masks
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: Path) -> None:
    """Give a private temporary file (0600) or folder (0700) the mode the user's umask asks for."""
    mode = 0o777 if path.is_dir() else 0o666
    os.chmod(path, mode & ~current_umask() & (stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO))


def swap_in(staging: Path, final: Path) -> None:
    """Rename `staging` to `final`, moving an older `final` aside first (two renames, signals held)."""
    if not final.exists():
        os.rename(staging, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-old-", dir=final.parent))
    with signals_held():
        os.rename(final, old)  # onto an empty folder: allowed, and atomic
        try:
            os.rename(staging, final)
        except BaseException:
            os.rename(old, final)
            raise
    shutil.rmtree(old, ignore_errors=True)


def replace_owned(staging: Path, final: Path, owns: tuple[str, ...]) -> None:
    """Move the files `owns` names from `staging` into `final`, removing those this run did not write;
    the folder's other files stay (see checkpoint.atomic_output_dir)."""
    written = {p.name for p in staging.iterdir()}
    unexpected = sorted(written - set(owns))
    if unexpected:
        raise RuntimeError(f"wrote {unexpected}, which it does not own in {final}")
    with signals_held():
        for name in owns:
            if name in written:
                os.replace(staging / name, final / name)
            elif (final / name).exists():
                os.unlink(final / name)


def check_replaceable(folder: Path) -> None:
    """BadInput unless `folder` is empty or holds an output compress wrote (it is about to be replaced)."""
    if not folder.is_dir():
        raise BadInput(f"{folder}: exists and is not a folder.")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries or _written_by_compress(folder):
        return
    shown = ", ".join(entries[:4]) + (" ..." if len(entries) > 4 else "")
    raise BadInput(
        f"{folder}: exists and holds files compress did not write ({shown}); compress replaces its output "
        "folder as a whole, so give a new or empty folder with -o."
    )


def _written_by_compress(folder: Path) -> bool:
    """Whether the folder holds a checkpoint or ONNX graph with compress's header record."""
    weights, graph = folder / "model.safetensors", folder / "model.onnx"
    if weights.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="np") as f:
                return FORMAT_KEY in (f.metadata() or {})
        except Exception:  # any unreadable file is simply not one compress wrote
            return False
    if graph.is_file():
        import onnx

        try:
            model = onnx.load(str(graph), load_external_data=False)
        except Exception:  # protobuf's DecodeError and friends: not a graph compress wrote
            return False
        return any(p.key == FORMAT_KEY for p in model.metadata_props)
    return False
