"""The optimizer-step loop: accumulation, clipping, non-finite steps, diagnostics, checkpoints, Ctrl-C."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import signal
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader

from envs.base import TrainingData
from policies.vla_policy import VLAPolicy
from vla_train.optim import DIAGNOSTIC_CHUNKS, ModalityOptimizer, chunked_gradient_diagnostics
from vla_train.progress import progress_bar
from vla_train.trainer.checkpoint import (
    TrainerState,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from vla_train.trainer.data_order import EpochSeededSampler, step_generator
from vla_train.trainer.metrics_log import MetricsLog, ThroughputWindow
from vla_train.trainer.schedule import build_lr_scheduler
from vla_train.trainer.sharded_checkpoint import load_sharded_checkpoint, save_sharded_checkpoint
from vla_train.trainer.sharding import full_value, local_rows

log = logging.getLogger(__name__)


def _ignore_sigint(worker_id: int) -> None:
    """Data workers leave Ctrl-C to the main process, which checkpoints before stopping."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the last good checkpoint is kept."""


@dataclass(frozen=True)
class EvaluationSchedule:
    """Every ``every`` steps (0: never), except at the last step, whose evaluation is the final one."""

    every: int
    total_steps: int

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0 and step < self.total_steps


class TrainingLoop:
    """Runs ``cfg.trainer.steps`` optimizer steps of ``policy`` on ``data`` and returns the last metrics.

    The global batch (``trainer.batch_size``, Table A1) is split over processes and accumulation
    micro-batches. A step whose loss or gradient norm is not finite is skipped and counted; a run of
    ``trainer.max_nonfinite_steps`` of them stops training with :class:`TrainingDiverged`.
    """

    def __init__(
        self,
        cfg: DictConfig,
        accelerator: Accelerator,
        policy: VLAPolicy,
        optimizer: ModalityOptimizer,
        data: TrainingData,
        run_dir: Path,
        resume_from: Path | None,
        periodic_evaluation: Callable[[VLAPolicy, int], dict[str, float]] | None = None,
    ) -> None:
        """``periodic_evaluation(policy, step)``: metrics of the weights at ``step`` every
        ``trainer.eval_every`` steps before the last, from the main process."""
        self.cfg, self.trainer_cfg = cfg, cfg.trainer
        self.periodic_evaluation = periodic_evaluation
        self.evaluation_schedule = EvaluationSchedule(
            cfg.trainer.eval_every if periodic_evaluation is not None else 0, cfg.trainer.steps
        )
        self.accelerator, self.run_dir = accelerator, run_dir
        accumulation = self.trainer_cfg.gradient_accumulation_steps
        per_step = accelerator.num_processes * accumulation
        if self.trainer_cfg.batch_size % per_step:
            raise ValueError(
                f"trainer.batch_size={self.trainer_cfg.batch_size} must be divisible by processes × "
                f"gradient_accumulation_steps = {per_step}"
            )
        micro_batch = self.trainer_cfg.batch_size // per_step
        if len(data.dataset) < micro_batch * accelerator.num_processes:
            raise ValueError(f"the dataset has {len(data.dataset)} samples, fewer than one batch")
        # DataLoader.__iter__ draws worker seeds from this generator (from the global RNG without one),
        # so it is re-seeded per epoch too: a mid-epoch resume then leaves every RNG as it would be.
        self.loader_generator = torch.Generator()
        loader = DataLoader(
            data.dataset,
            batch_size=micro_batch,
            sampler=EpochSeededSampler(len(data.dataset), seed=self.trainer_cfg.seed),
            drop_last=True,
            num_workers=self.trainer_cfg.num_workers,
            persistent_workers=False,
            generator=self.loader_generator,
            worker_init_fn=_ignore_sigint,
        )
        self.scheduler = build_lr_scheduler(
            optimizer,
            self.trainer_cfg.schedule,
            self.trainer_cfg.steps,
            self.trainer_cfg.warmup_steps,
            self.trainer_cfg.milestones,
            self.trainer_cfg.gamma,
            self.trainer_cfg.min_lr_ratio,
            self.trainer_cfg.decay_steps,
        )
        self.unwrapped_policy = policy
        self.raw_optimizer = optimizer
        # FSDP2 (trainer.strategy=fsdp, sharded by vla_train.trainer.sharding before the optimizer
        # was built): accelerate must not wrap the policy again, and checkpoints keep optimizer shards
        self.sharded = any(isinstance(param, DTensor) for param in policy.parameters())
        self.state = TrainerState()
        if resume_from is not None:
            if self.sharded:
                self.state = load_sharded_checkpoint(
                    resume_from,
                    policy,
                    optimizer,
                    self.scheduler,
                    accelerator.process_index,
                    accelerator.num_processes,
                )
            else:
                self.state = load_checkpoint(resume_from, policy, optimizer, self.scheduler)
            log.info("resumed from %s at step %d", resume_from, self.state.step)
        # the step whose checkpoint this run directory holds as it is now: saving it again (a finished run
        # resumed, the last step also a checkpoint_every step) would rewrite a whole model for nothing
        in_this_run = resume_from is not None and resume_from.resolve().parent.parent == run_dir.resolve()
        self._saved_step: int | None = self.state.step if in_this_run else None
        if self.sharded:
            self.policy = policy
            self.optimizer, self.loader = accelerator.prepare(optimizer, loader)
        else:
            self.policy, self.optimizer, self.loader = accelerator.prepare(policy, optimizer, loader)
        self.metrics = None
        if accelerator.is_main_process:
            self.metrics = MetricsLog(
                run_dir,
                cfg.logger.mode,
                cfg.logger.project,
                OmegaConf.to_container(cfg, resolve=True),
                entity=cfg.logger.entity,
                name=cfg.logger.name or cfg.run_name,
                tags=list(cfg.logger.tags),
                run_id=self.state.wandb_run_id,
            )
            # a fresh run starts a fresh file; a resumed one drops what it is about to redo
            self.metrics.truncate_after(self.state.step if resume_from is not None else -1)
            self.state.wandb_run_id = self.metrics.wandb_run_id
        names = {param: name for name, param in policy.named_parameters()}
        self.modality_of = {
            names[param]: group["modality"] for group in optimizer.param_groups for param in group["params"]
        }
        self._stop_requested = False

    # ------------------------------------------------------------------------------------------ data
    def _batches(self) -> Iterator[dict[str, Any]]:
        """Endless batches from the saved data position on, advancing epochs deterministically."""
        epoch, skip = self.state.epoch, self.state.batches_into_epoch
        while True:
            # accelerate's loader keeps its own epoch counter, starting at 0 in every process, and
            # hands it to the sampler on each pass (and to the loader that skip_first_batches copies
            # from it): set that counter, or a resumed run replays epoch 0's order after its first epoch.
            self.loader.set_epoch(epoch)
            self.loader_generator.manual_seed(self.trainer_cfg.seed * 100_003 + epoch)
            loader = self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
            for batch in loader:
                skip += 1
                self.state.epoch, self.state.batches_into_epoch = epoch, skip
                yield batch
            epoch, skip = epoch + 1, 0
            self.state.epoch, self.state.batches_into_epoch = epoch, 0

    # ------------------------------------------------------------------------------------------ loop
    def run(self) -> dict[str, float]:
        """Train to ``trainer.steps`` (or ``stop_at_step``, or a Ctrl-C), checkpoint, and return the last
        logged metrics with ``step``; ``finished`` is 1.0 when every step ran (then the caller evaluates),
        ``interrupted`` 1.0 after a Ctrl-C."""
        cfg = self.trainer_cfg
        stop_at = min(cfg.steps, cfg.stop_at_step) if cfg.stop_at_step else cfg.steps
        batches = self._batches()
        previous_handler = signal.signal(signal.SIGINT, self._request_stop)
        progress = progress_bar(
            cfg.steps,
            "train",
            initial=self.state.step,
            enabled=self.accelerator.is_main_process,
            interval_s=cfg.get("progress_interval_s", 30.0),
        )
        window = ThroughputWindow()
        last: dict[str, float] = {}
        try:
            while self.state.step < stop_at and not self._stop_requested:
                loss, grad_norm, lr = self._step(batches)
                window.add(cfg.batch_size)
                if self.state.step % cfg.log_every == 0 or self.state.step == cfg.steps:
                    last = self._step_metrics(loss, grad_norm, lr, window)
                    self._log(last, self.state.step)
                progress.set_postfix(
                    loss=f"{loss:.4f}",
                    lr=f"{lr:.2e}",
                    skipped=self.state.skipped_steps,
                    samples_per_s=f"{last.get('train/samples_per_second', 0.0):.0f}",
                )
                progress.update(1)
                self._after_step()
            self._save()
        finally:
            progress.close()
            # training is over and saved: Ctrl-C from here on stops an evaluation at once
            signal.signal(signal.SIGINT, previous_handler)
        finished = not self._stop_requested and self.state.step >= cfg.steps
        if not finished:
            reason = "interrupted" if self._stop_requested else f"stopped at trainer.stop_at_step={stop_at}"
            print(f"{reason}: checkpoint {self.checkpoint}; continue with trainer.resume=true")
        return {
            **last,
            "step": float(self.state.step),
            "finished": float(finished),
            "interrupted": float(self._stop_requested),
        }

    def _step(self, batches: Iterator[dict[str, Any]]) -> tuple[float, float, float]:
        """One optimizer step (skipped if its loss or gradient is not finite); ``(loss, grad norm, lr)``."""
        cfg, step = self.trainer_cfg, self.state.step
        micro_batches = [next(batches) for _ in range(cfg.gradient_accumulation_steps)]
        if cfg.diagnostics_every and step % cfg.diagnostics_every == 0:
            # logged with the step they precede, so a resumed run rewrites them like the rest
            self._log(self._gradient_diagnostics(micro_batches[0], step), step + 1)
        loss, grad_norm = self._accumulate_gradients(micro_batches, step)
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        lr = self.base_lr()  # what this step uses
        if finite:
            self.optimizer.step()
            self.state.nonfinite_streak = 0
        else:
            self.state.skipped_steps += 1
            self.state.nonfinite_streak += 1
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped first step is not a scheduler misuse
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        self.state.step += 1
        if self.state.nonfinite_streak >= cfg.max_nonfinite_steps:
            checkpoints = list_checkpoints(self.run_dir)
            raise TrainingDiverged(
                f"{self.state.nonfinite_streak} non-finite steps in a row (loss={loss}, grad norm="
                f"{grad_norm}) at step {self.state.step}; stopping. {self._divergence_hint()} Last good "
                f"checkpoint: {checkpoints[-1] if checkpoints else 'none yet'}"
            )
        return loss, grad_norm, lr

    def _step_metrics(
        self, loss: float, grad_norm: float, lr: float, window: ThroughputWindow
    ) -> dict[str, float]:
        samples_per_second, seconds_per_step = window.read(self.trainer_cfg.batch_size)
        return {
            "train/loss": loss,
            "train/grad_norm": grad_norm,
            "train/lr": lr,
            "train/samples_per_second": samples_per_second,
            # wall time of a whole step (data, forward, backward, optimizer): Fig. 1c, A1b
            "train/seconds_per_step": seconds_per_step,
            "train/skipped_steps": self.state.skipped_steps,
            "train/epoch": self.state.epoch,
        }

    def _after_step(self) -> None:
        """Checkpoint and evaluate when their schedules say so (the last step's are the caller's)."""
        cfg, step = self.trainer_cfg, self.state.step
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            self._save()
        if self.evaluation_schedule.due(step) and self.accelerator.is_main_process:
            self._log(self.periodic_evaluation(self.unwrapped_policy, step), step)

    @property
    def checkpoint(self) -> Path:
        """The directory of the latest checkpoint this loop saved."""
        return self.run_dir / "checkpoints" / checkpoint_name(self.state.step)

    def log(self, metrics: dict[str, float]) -> None:
        """Log ``metrics`` at the current step (the final evaluation's, from :func:`vla_train.train`)."""
        self._log(metrics, self.state.step)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()

    def _accumulate_gradients(self, micro_batches: list[dict[str, Any]], step: int) -> tuple[float, float]:
        accumulation = len(micro_batches)
        generator = step_generator(
            self.trainer_cfg.seed, step, self.accelerator.process_index, self.accelerator.device
        )
        total = 0.0
        self.policy.train()
        for micro, batch in enumerate(micro_batches):
            sync = (
                contextlib.nullcontext()
                if micro == accumulation - 1
                else self.accelerator.no_sync(self.policy)
            )
            with sync, self.accelerator.autocast():
                loss = self.policy(batch, generator=generator)
            self.accelerator.backward(loss / accumulation)
            total += loss.detach().float().item() / accumulation
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(
                torch.tensor(total, device=self.accelerator.device), "mean"
            ).item()
        parameters = [p for p in self.policy.parameters() if p.grad is not None]
        if self.trainer_cfg.max_grad_norm:
            grad_norm = self.accelerator.clip_grad_norm_(parameters, self.trainer_cfg.max_grad_norm)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        return total, float(full_value(grad_norm))

    def _gradient_diagnostics(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        """Per-modality gradient erank (eq. 4) of the batch gradient and SNR (eq. 5) across micro-batches.

        Uses its own forward/backward passes (without DDP sync) on the step's first micro-batch, its own
        random generator, and clears the gradients afterwards: training is the same with or without.
        """
        size = len(batch["instruction"])
        chunks = min(DIAGNOSTIC_CHUNKS, size)
        if chunks < 2:
            return {}
        names = dict(self.unwrapped_policy.named_parameters())
        bounds = torch.linspace(0, size, chunks + 1).long().tolist()
        generator = step_generator(
            self.trainer_cfg.seed + 7919, step, self.accelerator.process_index, self.accelerator.device
        )

        def chunk_gradients() -> Iterator[list[tuple[str, torch.Tensor]]]:
            with self.accelerator.no_sync(self.policy):
                for start, end in itertools.pairwise(bounds):
                    part = {k: v[start:end] for k, v in batch.items()}
                    self.optimizer.zero_grad(set_to_none=True)
                    with self.accelerator.autocast():
                        self.policy(part, generator=generator).backward()
                    # FSDP2: whole gradients (every process runs this, so the gathers match up)
                    yield [(n, full_value(p.grad)) for n, p in names.items() if p.grad is not None]

        result = chunked_gradient_diagnostics(chunk_gradients(), self.modality_of)
        self.optimizer.zero_grad(set_to_none=True)
        return result

    def _divergence_hint(self) -> str:
        """The settings that make a run diverge, with this run's values: what to lower first."""
        cfg = self.trainer_cfg
        clipping = (
            f"trainer.max_grad_norm={cfg.max_grad_norm}" if cfg.max_grad_norm else "no gradient clipping"
        )
        return (
            f"Likely too large a step: optimizer.lr={self.cfg.optimizer.lr} (lr now {self.base_lr():.3g}), "
            f"{clipping}, trainer.mixed_precision={cfg.mixed_precision}."
        )

    def base_lr(self) -> float:
        """``optimizer.lr`` on the schedule: the lr of every group but the auxiliary ones (a ratio of it)."""
        groups = self.raw_optimizer.param_groups
        return next((g["lr"] for g in groups if not g.get("auxiliary")), groups[0]["lr"])

    # ---------------------------------------------------------------------------------------- output
    def _save(self) -> None:
        if self._saved_step == self.state.step:  # the same on every process: all skip together
            return
        self.accelerator.wait_for_everyone()
        broken = [
            n for n, p in self.unwrapped_policy.named_parameters() if not torch.isfinite(local_rows(p)).all()
        ]
        if self.sharded:  # each process sees its rows only: a broken tensor anywhere stops every process
            flags = self.accelerator.reduce(
                torch.tensor(float(bool(broken)), device=self.accelerator.device), "sum"
            )
            if flags.item() and not broken:
                broken = ["(rows held by another process)"]
        if broken:  # e.g. a finite loss with an infinite step: never checkpoint such weights as good
            checkpoints = list_checkpoints(self.run_dir)
            raise TrainingDiverged(
                f"{len(broken)} weight tensors are not finite at step {self.state.step} (e.g. {broken[0]}); "
                f"not saved. {self._divergence_hint()} Last good checkpoint: "
                f"{checkpoints[-1] if checkpoints else 'none yet'}"
            )
        if self.sharded:
            save_sharded_checkpoint(
                self.run_dir,
                self.unwrapped_policy,
                self.raw_optimizer,
                self.scheduler,
                self.state,
                self.accelerator.process_index,
                self.accelerator.num_processes,
                self.accelerator.wait_for_everyone,
                keep=self.trainer_cfg.keep_checkpoints,
            )
        elif self.accelerator.is_main_process:
            save_checkpoint(
                self.run_dir,
                self.unwrapped_policy,
                self.raw_optimizer,
                self.scheduler,
                self.state,
                keep=self.trainer_cfg.keep_checkpoints,
            )
        self._saved_step = self.state.step

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.metrics is not None and metrics:
            self.metrics.log(metrics, step)

    def _request_stop(self, signum: int, frame: Any) -> None:
        """First Ctrl-C: finish the current step, checkpoint, exit. Second: stop at once."""
        if self._stop_requested:
            raise KeyboardInterrupt(
                "pressed twice: stopped at once, this step unsaved; the checkpoints saved before are kept, "
                "continue from the last with trainer.resume=true"
            )
        self._stop_requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (press again to abort)")
