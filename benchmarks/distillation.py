"""Distillation benchmark: does distillation recover what pruning, quantization or dropping layers lost?

    python benchmarks/distillation.py            # writes benchmarks/results/distillation.{md,json}
    python benchmarks/distillation.py --quick    # a smoke run: 3 steps a case, nothing written
    python benchmarks/distillation.py --render   # re-render the tables from the last run's JSON
    python benchmarks/distillation.py --latency  # measure the latency of the last run's rows
    python benchmarks/distillation.py --cases=2 --out=distillation-cnn   # one case, its own file
    python benchmarks/distillation.py --render --merge=distillation-cnn  # merge its rows in

One run, in order (the tables are rewritten after each case, marked partial until the last):
1. all-MiniLM-L6-v2, 30% of the FFN neurons pruned (magnitude, the prune pass), distilled from the
   unpruned model on the spam emails' train half; retention = the evaluator's spam probe accuracy on
   the test half (never trained on) before and after.
2. A 3-layer student of MiniLM (layers 2, 4, 6 of 6, initialised from the teacher), distilled the same
   way; retention, size and latency against the 6-layer teacher.
3. MiniLM quantized to INT4 (RTN, group 32), then trained through fake quantization (QAT); it ends in
   the quantize pass's INT4 format.
4. The residual CNN trained here on 4,000 real MNIST digits (benchmarks/models/digits_cnn.py), 50% of
   its convolution channels pruned, distilled on its training digits (logit KL + label cross-entropy);
   accuracy on the 1,000 held-out digits.

Training runs outside the benchmark lock (it measures no time; its seconds are wall time on a shared
machine); latency is measured under the lock, interleaved with the teacher, at the end.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time

import numpy as np
import torch
from common import RESULTS, WORK, benchmark_lock, markdown_table, minilm_path, write_results
from models.digits_cnn import accuracy, checkpoint, load_digits

import compress as cz
from compress.eval.latency import LatencySettings

QUICK = "--quick" in sys.argv
OUT = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--out=")), "distillation")
MERGE = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--merge=")), [])
STEPS = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--steps=")), 0)
CASE_ORDER = ["pruned 30% FFN neurons", "3-layer student", "CNN channels 50%", "INT4 g32 + QAT"]
MINILM_TRAINING = {
    "epochs": 1,
    "max_steps": 3 if QUICK else STEPS or 56,  # 56: one pass over the 900 training emails
    "batch_size": 16,
    "max_length": 128,
    "lr": 1e-4,
    "eval_every": 14,
    "val_max": 16 if QUICK else 100,
}
QAT_TRAINING = {**MINILM_TRAINING, "max_steps": 3 if QUICK else 28, "lr": 5e-5}
CNN_TRAINING = {
    "epochs": 2,
    "max_steps": 3 if QUICK else 0,
    "batch_size": 64,
    "lr": 1e-3,
    "eval_every": 19,
    "val_fraction": 0.1,
    "val_max": 400,
}
MINILM_LATENCY = LatencySettings(batch_size=8, seq_len=128, budget_s=5 if QUICK else 30)
CNN_LATENCY = LatencySettings(batch_size=64, budget_s=5 if QUICK else 20)


class SpamProbe:
    """The evaluator's classification task (compress/eval/tasks.py, same functions and settings), with
    the teacher's embeddings computed once: a ridge probe fitted on the teacher's mean-pooled
    embeddings of the spam train half, scored on a model's embeddings of the 1,000 test emails."""

    def __init__(self, teacher):
        from compress.eval.data import load_labelled
        from compress.eval.tasks import ProbeClassification, fit_probe

        self.task = ProbeClassification(load_labelled("spam", limit=64 if QUICK else None))
        d = self.task.data
        model = cz.load(teacher)
        self.probe = fit_probe(self.task._embed(model, d.train_texts, None), d.train_labels, d.num_classes)
        self.teacher = self.score(model)

    def score(self, model) -> float:
        from compress.eval.tasks import accuracy_and_f1, predict

        d = self.task.data
        model = cz.load(model) if not isinstance(model, cz.Model) else model
        features = self.task._embed(model, d.test_texts, None)
        return accuracy_and_f1(predict(self.probe, features), d.test_labels, d.num_classes)[0]


class PrintProgress:
    """Training progress on stdout (a log, not a terminal): every 10 steps, loss and retention."""

    def __init__(self, label: str):
        self.label, self.step, self.text, self.started = label, 0, "", time.perf_counter()

    def start(self, description: str, total: int | None = None) -> None:
        self.total, self.step = total, 0

    def advance(self, steps: int = 1) -> None:
        self.step += steps
        if steps and (self.step % 10 == 0 or self.step == self.total):
            seconds = time.perf_counter() - self.started
            print(f"  {self.label}: step {self.step}/{self.total} {self.text} ({seconds:.0f} s)", flush=True)

    def status(self, text: str) -> None:
        self.text = text

    def done(self) -> None:
        pass


def minilm_case(label: str, probe: SpamProbe, src, student, student_layers=None, qat=False, training=None):
    """Score the student before, distil it on the spam train half, score it after."""
    name = "distill-minilm-" + label.split()[0].lower()
    if student is None:  # the layer-dropped copy, before any training
        from compress.distillation import starting_student

        before = probe.score(starting_student(None, str(src), student_layers))
    else:
        before = probe.score(student)
    print(label, "before", before, "teacher", probe.teacher, flush=True)
    folder = WORK / f"{name}-checkpoints"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    art = cz.distill(
        None if student is None else str(student),
        teacher=str(src),
        data="spam",
        student_layers=student_layers,
        qat=qat,
        training=training or MINILM_TRAINING,
        checkpoints={"dir": str(folder), "every": 25},
        progress=PrintProgress(label),
    )
    seconds = time.perf_counter() - started
    path = art.save(WORK / name)
    shutil.rmtree(folder, ignore_errors=True)
    after = probe.score(path)
    out = row(label, path, art, seconds, "spam probe accuracy (test half)")
    out.update(baseline=probe.teacher, before=before, after=after)
    out["retention_before"], out["retention_after"] = before / probe.teacher, after / probe.teacher
    print(label, {k: v for k, v in out.items() if k != "validation"}, flush=True)
    return out


def cnn_case() -> dict:
    src = checkpoint()
    train, test = load_digits()
    data = WORK / "distill-digits-train.npz"
    np.savez(data, pixel_values=train.images, labels=train.labels)
    pruned = cz.prune(src, "channels", 0.5, data=torch.from_numpy(train.images[:256])).save(
        WORK / "distill-cnn-pruned"
    )
    base_acc = accuracy(cz.load(src).module, test)
    before_acc = accuracy(cz.load(pruned).module, test)
    folder = WORK / "distill-cnn-checkpoints"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    art = cz.distill(
        str(pruned),
        teacher=str(src),
        data=str(data),
        losses={"task": 1.0},
        training=CNN_TRAINING,
        checkpoints={"dir": str(folder), "every": 50},
        progress=PrintProgress("CNN"),
    )
    seconds = time.perf_counter() - started
    path = art.save(WORK / "distill-cnn")
    shutil.rmtree(folder, ignore_errors=True)
    after_acc = accuracy(cz.load(path).module, test)
    out = row("CNN channels 50%", path, art, seconds, "digit accuracy (1,000 held out)")
    out.update(baseline=base_acc, before=before_acc, after=after_acc)
    out["retention_before"], out["retention_after"] = before_acc / base_acc, after_acc / base_acc
    out["teacher_path"] = str(src)
    print("CNN", {k: v for k, v in out.items() if k != "validation"}, flush=True)
    return out


def row(label, path, art, seconds, metric) -> dict:
    record = art.stats["distill.record"]
    return {
        "case": label,
        "path": str(path),
        "metric": metric,
        "steps": record["steps"],
        "best_step": record["best_step"],
        "train_samples": record["data"]["train"],
        "validation": record["validation"],
        "weights": record["weights"],
        "seconds": seconds,
        "teacher_path": record["teacher"],
    }


def measure(r: dict, devices: tuple[str, ...]) -> None:
    """Size, FLOPs and output fidelity of a distilled model against its teacher; latency on `devices`."""
    cnn = r["case"].startswith("CNN")
    batch = torch.from_numpy(load_digits()[1].images[:64]) if cnn else None
    report = cz.evaluate(
        r["path"],
        r["teacher_path"],
        task="fidelity",
        inputs=batch,
        devices=devices,
        latency=CNN_LATENCY if cnn else MINILM_LATENCY,
    )
    r.update(
        size_mb=report.size["bytes"] / 1e6,
        size_ratio=report.size["ratio"],
        parameters=report.size["parameters"],
        ideal_speedup=report.compute.get("ideal_speedup"),
        fidelity=report.accuracy.value,
    )
    if devices:
        r["latency"] = next(x for x in report.latency if x["runtime"] == "torch")
        print(r["case"], r["size_ratio"], r["latency"].get("speedup"), flush=True)


def add_latency(rows: list[dict]) -> None:
    """Latency of each distilled model against its teacher, interleaved, under the benchmark lock."""
    with benchmark_lock():
        for r in rows:
            if "latency" not in r:  # rows measured by an earlier --latency keep their numbers
                measure(r, ("cpu",))


def _speed(lat: dict | None) -> str:
    if not lat:
        return "not measured"
    if lat.get("status") != "ok":
        return f"unavailable ({lat.get('reason')})"
    lo, hi = lat["speedup_ci"]
    return f"{lat['speedup']:.2f}× [{lo:.2f}–{hi:.2f}]"


def render(data: dict) -> str:
    rows, env = data["rows"], data["environment"]
    headers = [
        "case",
        "metric",
        "teacher",
        "before",
        "after",
        "retention before",
        "retention after",
        "size MB",
        "size vs teacher",
        "ideal speedup",
        "speedup torch (p50, 95% CI)",
        "steps",
        "train s",
    ]
    body = [
        [
            r["case"],
            r["metric"],
            r["baseline"],
            r["before"],
            r["after"],
            r["retention_before"],
            r["retention_after"],
            r.get("size_mb"),
            r.get("size_ratio"),
            r.get("ideal_speedup"),
            _speed(r.get("latency")),
            r["steps"],
            r["seconds"],
        ]
        for r in rows
    ]
    settings = data["settings"]
    md = [
        "# Distillation: recovering pruned, quantized and layer-dropped students",
        "",
        ("**PARTIAL RESULTS**: the run stopped before every case was done.\n" if data.get("partial") else ""),
        f"One run on {env['cpu']}, {env['threads']} threads, torch {env['versions']['torch']}, no GPU "
        "(CUDA unavailable: training ran on the CPU). Teachers: all-MiniLM-L6-v2 (float32, 6 layers) and "
        "the residual CNN trained here on 4,000 MNIST digits (benchmarks/models/digits_cnn.py).",
        "",
        markdown_table(headers, body),
        "MiniLM rows: accuracy is the evaluator's linear probe fitted on the teacher's embeddings of the "
        "spam emails' train half and scored on the 1,000 emails of the test half; the students were "
        "distilled on the train half only (900 emails, 100 more held out for validation and the best "
        "checkpoint), so the scored emails were never trained on. Losses (automatic for an encoder): "
        "hidden-state MSE of each student layer against the teacher layer it came from, plus embedding "
        "cosine of the mean-pooled sentence embeddings. CNN row: accuracy on the 1,000 held-out digits; "
        "distilled on the 4,000 training digits (400 held out for validation) with logit KL (T=2) plus "
        "the label cross-entropy; batch-norm statistics re-estimated after pruning (the prune default).",
        "",
        f"Settings. MiniLM: {json.dumps(settings['minilm'])}; the INT4 + QAT row: "
        f"{json.dumps(settings['minilm_qat'])}. CNN: {json.dumps(settings['cnn'])}. "
        f"Latency: MiniLM batch {MINILM_LATENCY.batch_size} x {MINILM_LATENCY.seq_len} tokens, CNN batch "
        f"{CNN_LATENCY.batch_size}; the evaluator's interleaved rounds (teacher and student alternate), "
        "speedup = teacher p50 / student p50. Training seconds are wall time on a 2-core machine shared "
        "with other developers' jobs (training ran outside the benchmark lock); they are indicative only.",
        "",
        "Validation retention during training (step: retention on the held-out training samples):",
        "",
    ]
    for r in rows:
        trace = ", ".join(f"{v['step']}: {v['retention']:.4f}" for v in r["validation"])
        md.append(f"- {r['case']}: {trace} (best at step {r['best_step']})")
    for note in data.get("notes", []):
        md += ["", note]
    return "\n".join(md) + "\n"


def main() -> None:
    if "--render" in sys.argv or "--latency" in sys.argv:  # from the last run's JSON
        data = json.loads((RESULTS / "distillation.json").read_text())
        if MERGE:  # rows of cases run in separate processes (--out), in case order
            parts = [json.loads((RESULTS / f"{name}.json").read_text()) for name in MERGE]
            data["rows"] = sorted(
                {r["case"]: r for part in [data, *parts] for r in part["rows"]}.values(),
                key=lambda r: CASE_ORDER.index(r["case"]),
            )
            data["partial"] = len(data["rows"]) < len(CASE_ORDER)
        if "--latency" in sys.argv:  # the rows' latency only (a run stopped before it got there)
            add_latency(data["rows"])
        write_results("distillation", render(data), data)
        return
    from compress.eval.environment import environment

    src = minilm_path()
    data = {
        "rows": [],
        "partial": True,
        "settings": {"minilm": MINILM_TRAINING, "minilm_qat": QAT_TRAINING, "cnn": CNN_TRAINING},
        "environment": environment(),
    }
    probe = functools.cache(lambda: SpamProbe(src))  # built when a MiniLM case first needs it
    cases = [
        lambda: minilm_case(
            "pruned 30% FFN neurons",
            probe(),
            src,
            cz.prune(src, pattern="neurons", sparsity=0.3).save(WORK / "distill-minilm-pruned-start"),
        ),
        lambda: minilm_case("3-layer student", probe(), src, None, student_layers=3),
        lambda: cnn_case(),
        lambda: minilm_case(
            "INT4 g32 + QAT",
            probe(),
            src,
            cz.quantize(src, "int4", group_size=32).save(WORK / "distill-minilm-int4-start"),
            qat=True,
            training=QAT_TRAINING,
        ),
    ]
    only = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--cases=")]
    chosen = [int(i) for i in only[0].split(",")] if only else range(len(cases))
    for i in chosen:
        data["rows"].append(cases[i]())
        measure(data["rows"][-1], ())  # size and FLOPs now; latency at the end, under the lock
        if not QUICK:
            write_results(OUT, render(data), data)
    if "--no-latency" not in sys.argv:
        add_latency(data["rows"])
    data["partial"] = len(data["rows"]) < len(cases)
    if not QUICK:
        write_results(OUT, render(data), data)
    else:
        print(render(data))


if __name__ == "__main__":
    main()
