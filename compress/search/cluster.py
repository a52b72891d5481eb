"""Ray for a search: a local instance started for it, or an existing cluster, and the pool of workers.

Without an address, a local Ray instance is started for the search, sized to this machine (its cores
and the memory free now), with no dashboard, no usage statistics, its own authentication token (so
nothing is written to ~/.ray) and its temporary folder under /tmp, and it is shut down when the
search ends. With `--address HOST:PORT` the trials go to that cluster (`ray start --head` there) and
the cluster is left running; a token in RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) is used to connect.
Each worker is an actor that holds the model (compress.search.worker); the checkpoint goes into the
object store once, and nodes other than the driver's fetch it once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from compress.errors import BadInput, CompressError

ENV = {"RAY_USAGE_STATS_ENABLED": "0"}  # no usage statistics: there is no network here, and it is ours
WORKER_MEMORY_FLOOR = 1.5e9  # bytes a worker needs besides its model (torch, the evaluator, an export)
MODEL_COPIES = 6  # copies of the weights a trial holds at its peak (base, candidate, exports, baseline)


def ray_module():
    try:
        import ray
    except ImportError:
        raise BadInput(
            "compress search runs its trials on Ray, which is not installed: pip install 'compress[search]'."
        ) from None
    return ray


def check_address(address: str, timeout: float = 3.0) -> tuple[str, int]:
    """HOST:PORT of a Ray cluster that answers; BadInput in one sentence otherwise (before any work)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BadInput(f"--address {address}: expected HOST:PORT of a Ray head (e.g. 10.0.0.5:6379).")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise BadInput(
            f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
            f"`ray start --head --port {port}` on that machine, or leave --address out to run here."
        ) from None
    return host, int(port)


@dataclass
class Session:
    """The Ray this search runs on: its CPUs and memory for sizing, and whether we started it."""

    started: bool
    cpus: int
    memory: float  # bytes Ray may schedule
    address: str


@contextlib.contextmanager
def session(address: str | None, cpus: int | None = None) -> Iterator[Session]:
    """Connect to `address`, or start a local Ray instance; shut down what we started, always."""
    ray = ray_module()
    if ray.is_initialized():  # a notebook already connected: use it, and leave it as it is
        yield _describe(ray, False, "the Ray instance this process is connected to")
        return
    saved = {key: os.environ.get(key) for key in (*ENV, "RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    os.environ.update(ENV)
    temp = None
    try:
        if address:
            check_address(address)
            if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
                os.environ.setdefault(
                    "RAY_AUTH_MODE", "token"
                )  # a token given: use it (`ray start`'s default)
            _init(ray, address=address)
        else:
            import psutil

            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))  # else Ray writes ~/.ray
            temp = tempfile.mkdtemp(prefix="cz-ray-", dir="/tmp")  # short: Ray's socket paths are limited
            memory = psutil.virtual_memory().available
            _init(
                ray,
                address="local",
                num_cpus=cpus or os.cpu_count() or 1,
                include_dashboard=False,
                _temp_dir=temp,
                object_store_memory=int(max(100e6, min(2e9, memory * 0.1))),
                _memory=int(memory * 0.8),
            )
        yield _describe(ray, address is None, address or "a local Ray instance")
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _init(ray, **options: Any) -> None:
    try:
        ray.init(log_to_driver=False, logging_level=logging.ERROR, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = options["address"] if options["address"] != "local" else "a local Ray instance"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (
            " The cluster uses Ray's token authentication (`ray start`'s default): give this process its "
            "token (RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it)."
            if "auth" in str(exc).lower()
            else ""
        )
        raise BadInput(f"cannot start or reach {where}: {first}.{hint}") from None


def _describe(ray, started: bool, address: str) -> Session:
    resources = ray.cluster_resources()
    return Session(started, int(resources.get("CPU", 1)), float(resources.get("memory", 0)), address)


def plan_workers(
    session: Session, model_bytes: int, workers: int | None, threads: int
) -> tuple[int, int, float]:
    """(workers, CPUs each, memory each): `threads` CPUs per worker (the threads a trial is timed
    with), as many workers as asked, else as many as the CPUs and memory allow."""
    need = WORKER_MEMORY_FLOOR + MODEL_COPIES * model_bytes
    fit = max(1, int(session.memory // need)) if session.memory else session.cpus
    count = workers or max(1, min(session.cpus // threads, fit))
    if workers is not None and workers < 1:
        raise BadInput(f"--workers {workers}: need at least one worker.")
    return count, threads, need


class Pool:
    """The search's workers: Ray actors that each hold the model, restarted by Ray when one dies."""

    def __init__(self, setup_for: Any, shipped: Any, count: int, cpus: int, memory: float):
        import ray

        from compress.search.worker import TrialWorker

        actor = ray.remote(TrialWorker)
        self.ray = ray
        self.actors = []
        for _ in range(count):
            options = {"num_cpus": cpus, "max_restarts": -1, "max_task_retries": 0}
            if memory:
                options["memory"] = int(memory)
            self.actors.append(actor.options(**options).remote(setup_for(cpus), [shipped]))
        self.info = {}
        for handle in list(self.actors):
            self.info[id(handle)] = self.describe(handle)

    def describe(self, handle: Any, timeout: float = 600) -> dict[str, Any]:
        """The worker's pid and node, waiting for it to start (or restart, after its process died);
        CompressError when it cannot (its model does not load there, or it never comes back)."""
        import time

        errors = self.ray.exceptions
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = self.ray.get(handle.info.remote(), timeout=max(1.0, deadline - time.monotonic()))
                break
            except errors.ActorUnavailableError as exc:  # restarting: ask again
                if time.monotonic() > deadline:
                    raise CompressError(f"a search worker did not come back: {reason(exc)}") from None
                time.sleep(1.0)
            except (errors.RayActorError, errors.GetTimeoutError) as exc:
                raise CompressError(f"a search worker could not start: {reason(exc)}") from None
        self.info[id(handle)] = info
        return info

    def close(self, graceful: bool = True) -> None:
        """Stop the workers; `graceful`: first let each remove the files shipped to its node."""
        if graceful:
            with contextlib.suppress(Exception):
                self.ray.get([a.close.remote() for a in self.actors], timeout=60)
        for handle in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(handle)


def reason(exc: BaseException) -> str:
    """The first line that says what went wrong inside a Ray error."""
    text = str(exc).strip()
    for line in text.splitlines():
        if "Error" in line or "error" in line:
            return line.strip()[:300]
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def dead_worker(ray, exc: BaseException) -> bool:
    """Whether an error means the worker process died (killed, out of memory), not the trial failing."""
    kinds = tuple(
        getattr(ray.exceptions, name)
        for name in ("RayActorError", "WorkerCrashedError", "OutOfMemoryError", "ActorUnavailableError")
        if hasattr(ray.exceptions, name)
    )
    return isinstance(exc, kinds)
