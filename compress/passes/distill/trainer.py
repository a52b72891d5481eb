"""The training loop: batches, gradient accumulation, learning-rate schedule, validation with early
stopping, checkpoints and resume.

Determinism: the order of the samples in each epoch comes from a generator seeded with (seed,
epoch), and the random state (dropout) is saved with every checkpoint as it was at the end of the
last completed step, so a resumed run takes the same steps as one that was never interrupted.
A checkpoint is written every `checkpoint_every` steps and when the run is interrupted (Ctrl-C)
between two updates; the best validated weights are kept beside it and are what the run returns.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compress.errors import BadInput
from compress.passes.distill.state import load_state, save_state

LAST, BEST = "last.safetensors", "best.safetensors"


@dataclass
class Run:
    """What the loop did, for the report."""

    step: int = 0
    total_steps: int = 0
    history: list[dict] = field(default_factory=list)  # one entry per validation
    best_retention: float = -math.inf
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    resumed_from: int | None = None
    losses: list[float] = field(default_factory=list)  # total loss per step
    seconds: float = 0.0


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up over `warmup` steps, then constant, linear or cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return max(0.0, 1 - progress)


class Trainer:
    def __init__(
        self,
        cfg,
        checkpoints,
        student,
        teacher_tap,
        student_tap,
        objective,
        batcher,
        validator,
        masks,
        progress,
    ):
        self.cfg, self.ckpt, self.student, self.objective = cfg, checkpoints, student, objective
        self.t_tap, self.s_tap, self.batcher, self.validator = teacher_tap, student_tap, batcher, validator
        self.masks, self.progress = masks, progress
        self.params = [p for p in [*student.parameters(), *objective.parameters()] if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = len(batcher.data)
        self.per_step = cfg.batch_size * cfg.grad_accum
        self.steps_per_epoch = math.ceil(n / self.per_step)
        total = cfg.epochs * self.steps_per_epoch
        self.total = min(total, cfg.max_steps) if cfg.max_steps else total
        warmup = round(cfg.warmup * self.total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total, warmup, cfg.schedule)
        )
        self.folder = Path(checkpoints.dir) if checkpoints.dir else None
        self.run = Run(total_steps=self.total)
        self.best_state: dict | None = None
        self.rng = torch.get_rng_state()  # as at the end of the last completed step
        self.updating = False

    # ---- the loop ---------------------------------------------------------------------------------
    def fit(self, fingerprint: dict) -> Run:
        started = time.perf_counter()
        if self.ckpt.resume:
            self.restore(fingerprint)
        else:
            self.validate()
        if self.progress:
            self.progress.start("distilling", total=self.total)
            self.progress.advance(self.run.step)
        try:
            while self.run.step < self.total and not self.run.stopped_early:
                self.train_step()
                step = self.run.step
                if self.folder is not None and self.due(step, self.ckpt.every):
                    self.save_last(fingerprint)
                end_of_epoch = step % self.steps_per_epoch == 0
                if self.due(step, self.cfg.eval_every) or (not self.cfg.eval_every and end_of_epoch):
                    self.validate()
                if self.progress:
                    self.progress.advance()
                    _status(self.progress, self.run)
            if not self.run.history or self.run.history[-1]["step"] != self.run.step:
                self.validate()
        except KeyboardInterrupt:
            if self.folder is not None and not self.updating:
                self.save_last(fingerprint)  # the last completed step: resume loses nothing
            raise
        finally:
            if self.progress:
                self.progress.done()
        if self.folder is not None:
            self.save_last(fingerprint)
        self.restore_best()
        self.run.seconds += time.perf_counter() - started
        return self.run

    def due(self, step: int, every: int) -> bool:
        return bool(every) and step % every == 0

    def step_indices(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(self.batcher.data), generator=generator)
        return order[k * self.per_step : (k + 1) * self.per_step].tolist()

    def train_step(self) -> None:
        indices = self.step_indices(self.run.step)
        micro = [indices[i : i + self.cfg.batch_size] for i in range(0, len(indices), self.cfg.batch_size)]
        self.student.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for chunk in micro:
            batch = self.batcher(chunk)
            with torch.no_grad():
                t_out = self.t_tap(batch)
            parts = self.objective(self.s_tap(batch), t_out, batch)
            (parts["total"] / len(micro)).backward()
            total += parts["total"].item() / len(micro)
        if not math.isfinite(total):
            raise BadInput(
                f"distill: the loss became {total} at step {self.run.step + 1}; lower the learning rate."
            )
        self.updating = True
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            for weight, mask in self.masks:
                weight.mul_(mask)  # pruned weights stay zero
        self.run.step += 1
        self.updating = False
        self.rng = torch.get_rng_state()
        self.run.losses.append(total)

    # ---- validation and the best weights ----------------------------------------------------------
    def validate(self) -> None:
        score = self.validator.score(self.student)
        entry = {"step": self.run.step, **score.to_dict()}
        if self.run.losses:
            entry["loss"] = self.run.losses[-1]
        self.run.history.append(entry)
        improved = score.retention > self.run.best_retention + self.cfg.min_delta
        if score.retention >= self.run.best_retention:  # ties go to the later, more trained weights
            self.run.best_retention, self.run.best_step = score.retention, self.run.step
            self.keep_best()
        if self.run.step == 0:
            return
        self.run.bad_evals = 0 if improved else self.run.bad_evals + 1
        if self.cfg.patience and self.run.bad_evals >= self.cfg.patience:
            self.run.stopped_early = True

    def keep_best(self) -> None:
        state = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        if self.folder is not None:
            save_state(self.folder / BEST, {"student": state, "step": self.run.step})
        else:
            self.best_state = state

    def restore_best(self) -> None:
        if self.run.best_step == self.run.step:
            return
        state = self.best_state
        if state is None and self.folder is not None and (self.folder / BEST).exists():
            state = load_state(self.folder / BEST)["student"]
        if state is not None:
            self.student.load_state_dict(state)

    # ---- checkpoints ------------------------------------------------------------------------------
    def save_last(self, fingerprint: dict) -> None:
        run = self.run
        save_state(
            self.folder / LAST,
            {
                "fingerprint": fingerprint,
                "run": {
                    "step": run.step,
                    "history": run.history,
                    "best_retention": run.best_retention,
                    "best_step": run.best_step,
                    "bad_evals": run.bad_evals,
                    "stopped_early": run.stopped_early,
                    "losses": run.losses,
                    "seconds": run.seconds,
                },
                "student": self.student.state_dict(),
                "objective": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": self.rng,
            },
        )

    def restore(self, fingerprint: dict) -> None:
        path = self.folder / LAST if self.folder is not None else None
        if path is None or not path.exists():
            where = f"in {self.folder}" if self.folder is not None else "(no checkpoint folder was given)"
            raise BadInput(f"distill.resume: there is no checkpoint to resume from {where}.")
        state = load_state(path)
        for key, value in fingerprint.items():
            if state["fingerprint"].get(key) != value:
                raise BadInput(
                    f"{path}: was made with a different '{key}' ({state['fingerprint'].get(key)!r}, now "
                    f"{value!r}); resume with the same settings or start afresh in another folder."
                )
        try:
            self.student.load_state_dict(state["student"])
            self.objective.load_state_dict(state["objective"])
        except RuntimeError as exc:
            raise BadInput(f"{path}: does not fit this student ({str(exc).splitlines()[0]}).") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.rng = state["rng"]
        saved = state["run"]
        for key in ("step", "history", "best_retention", "best_step", "bad_evals", "stopped_early", "losses"):
            setattr(self.run, key, saved[key])
        self.run.seconds = saved["seconds"]
        self.run.resumed_from = saved["step"]


def _status(progress, run: Run) -> None:
    """Loss and the last validated retention beside the bar, where the progress display can show it."""
    show = getattr(progress, "status", None)
    if show is None:
        return
    text = f"loss {run.losses[-1]:.4f}" if run.losses else ""
    if run.history:
        text += f" · retention {run.history[-1]['retention']:.4f}"
    show(text)
