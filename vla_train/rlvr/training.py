"""``train_rlvr(cfg) -> metrics``: everything ``python train_rlvr.py ...`` does, callable from tests.

TRL's ``GRPOTrainer`` (or :class:`~vla_train.rlvr.gmpo.GMPOTrainer`) runs the rollouts, rewards, group
advantages and checkpoints; this module gives it the paper's optimizer object
(:func:`~vla_train.rlvr.optimizer.build_rlvr_optimizer`), the task's prompts and verifiable reward, and
maps the paper's batch settings (prompts per step, group size) onto TRL's per-device ones. The final
accuracy is measured by :func:`~vla_train.rlvr.evaluation.evaluate_accuracy` on the test split.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback, TrainerState
from trl import GRPOTrainer

from vla_train.config import ConfigError, check_boolean_overrides, check_closed, validate_optimizer
from vla_train.optim import ModalityOptimizerOptions
from vla_train.rlvr.checkpoints import check_resumable, last_checkpoint
from vla_train.rlvr.diagnostics import GradientDiagnostics
from vla_train.rlvr.evaluation import drop_overlong_prompts, evaluate_accuracy
from vla_train.rlvr.gmpo import GMPOTrainer
from vla_train.rlvr.models import load_policy_model
from vla_train.rlvr.optimizer import build_rlvr_optimizer
from vla_train.trainer.metrics_log import MetricsLog
from vla_train.trainer.run_directory import claim_run_directory
from vla_train.training import RunDirectoryInUse, check_resumed_config, configure_caches

log = logging.getLogger(__name__)

ALGORITHMS = ("grpo", "gmpo")
MODEL_DTYPES = ("float32", "bfloat16", "float16")
#: what a resumed run may change (dotted prefixes): rl.steps extends a run (the lr is constant), the rest
#: is bookkeeping, evaluation and where generation runs
CHANGEABLE_ON_RESUME = (
    "rl.resume",
    "rl.steps",
    "rl.log_every",
    "rl.save_every",
    "rl.eval_every",
    "rl.eval_examples",
    "rl.eval_batch_size",
    "rl.diagnostics_every",
    "rl.cpu",
    "rl.use_vllm",
    "model.gradient_checkpointing",
    "eval_task",
    "logger",
    "output_dir",
    "run_name",
)


def validate_rlvr_config(cfg: DictConfig) -> None:
    """Ranges and choices the schema's types cannot express; raises :class:`ConfigError` naming the key."""
    check_closed(cfg, "")
    check_boolean_overrides(cfg)
    rl, algorithm = cfg.rl, cfg.algorithm
    if algorithm.name not in ALGORITHMS:
        raise ConfigError(f"algorithm.name={algorithm.name!r}: must be one of {ALGORITHMS}")
    if rl.max_prompt_length is not None and rl.max_prompt_length < 1:
        raise ConfigError(f"rl.max_prompt_length={rl.max_prompt_length}: must be >= 1 (null: no limit)")
    for key in ("diagnostics_every", "eval_every"):
        if rl[key] < 0:
            raise ConfigError(f"rl.{key}={rl[key]}: must be >= 0 (0: never)")
    for key in ("steps", "prompts_per_step", "group_size", "micro_batch", "max_completion_length",
                "log_every", "save_every", "eval_batch_size"):  # fmt: skip
        if rl[key] < 1:
            raise ConfigError(f"rl.{key}={rl[key]}: must be >= 1")
    if rl.group_size < 2:
        raise ConfigError(f"rl.group_size={rl.group_size}: a group needs >= 2 completions (advantages)")
    if (rl.prompts_per_step * rl.group_size) % rl.micro_batch:
        raise ConfigError(
            f"rl.micro_batch={rl.micro_batch}: must divide rl.prompts_per_step × rl.group_size = "
            f"{rl.prompts_per_step * rl.group_size} (the completions of one optimizer step)"
        )
    generation = rl.prompts_per_generation
    if generation is not None and (generation < 1 or generation % rl.prompts_per_step):
        raise ConfigError(
            f"rl.prompts_per_generation={generation}: must be a multiple of rl.prompts_per_step="
            f"{rl.prompts_per_step}"
        )
    if not 0 < rl.temperature < math.inf:
        raise ConfigError(f"rl.temperature={rl.temperature}: must be a finite number > 0")
    for key in ("epsilon", "epsilon_high", "beta"):
        value = algorithm[key]
        if value is not None and not 0 <= value < math.inf:
            raise ConfigError(f"algorithm.{key}={value}: must be a finite number >= 0")
    if rl.mixed_precision not in ("auto", "no", "bf16"):
        raise ConfigError(f"rl.mixed_precision={rl.mixed_precision!r}: must be auto, no or bf16")
    validate_optimizer(cfg)
    if not 0 <= rl.seed < 2**32:
        raise ConfigError(f"rl.seed={rl.seed}: must be 0 to 2**32 - 1")
    if rl.eval_examples is not None and rl.eval_examples < 1:
        raise ConfigError(f"rl.eval_examples={rl.eval_examples}: must be >= 1 (null: the whole test split)")
    if cfg.model.dtype not in MODEL_DTYPES:
        raise ConfigError(f"model.dtype={cfg.model.dtype!r}: must be one of {MODEL_DTYPES}")
    if rl.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "rl.use_vllm=true: vLLM is not installed (pip install 'trl[vllm]'), or use_vllm=false"
        )
    _check_model_path(cfg.model.name_or_path)


def _check_model_path(name_or_path: str | None) -> None:
    """A local directory that is not there is named, not sent to the hub as a malformed repo id."""
    if name_or_path is None:
        return
    path = Path(name_or_path).expanduser()
    if name_or_path.startswith((".", "/", "~")) and not path.is_dir():
        raise ConfigError(
            f"model.name_or_path={name_or_path}: no such directory (a hub id has no leading '.', '/' or '~')"
        )


def build_task(node: DictConfig, key: str) -> Any:
    """The task object of ``node``; a constructor's refusal (a bad option, a missing file) names ``key``."""
    try:
        return instantiate(node)
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise ConfigError(f"{key} ({node.get('_target_')}): {cause}") from cause


def optimizer_options(node: DictConfig) -> ModalityOptimizerOptions:
    names = {f.name for f in dataclasses.fields(ModalityOptimizerOptions)}
    values = OmegaConf.to_container(node, resolve=True)
    return ModalityOptimizerOptions(**{k: v for k, v in values.items() if k in names})


def grpo_arguments(cfg: DictConfig, cpu: bool) -> Any:
    """The paper's batch settings in TRL's terms: an optimizer step takes ``prompts_per_step`` groups
    of ``group_size`` completions in micro-batches; one generation round serves
    ``prompts_per_generation / prompts_per_step`` steps (verl's mini-batches of a rollout batch)."""
    from trl import GRPOConfig

    rl, algorithm = cfg.rl, cfg.algorithm
    world = int(os.environ.get("WORLD_SIZE", "1"))
    completions = rl.prompts_per_step * rl.group_size
    if completions % (rl.micro_batch * world):
        raise ConfigError(
            f"rl.micro_batch={rl.micro_batch} × {world} processes must divide the {completions} "
            "completions of one optimizer step"
        )
    accumulation = completions // (rl.micro_batch * world)
    rounds = (rl.prompts_per_generation or rl.prompts_per_step) // rl.prompts_per_step
    bf16 = rl.mixed_precision == "bf16" or (rl.mixed_precision == "auto" and not cpu)
    return GRPOConfig(
        output_dir=str(cfg.output_dir),
        max_steps=rl.steps,
        per_device_train_batch_size=rl.micro_batch,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation * rounds,
        num_generations=rl.group_size,
        max_completion_length=rl.max_completion_length,
        temperature=rl.temperature,
        loss_type=algorithm.loss_type,
        epsilon=algorithm.epsilon,
        epsilon_high=algorithm.epsilon_high,
        beta=algorithm.beta,
        seed=rl.seed,
        data_seed=rl.seed,
        logging_steps=rl.log_every,
        save_steps=rl.save_every,
        save_strategy="steps",
        report_to=[] if cfg.logger.mode == "disabled" else ["wandb"],
        run_name=cfg.run_name,
        use_cpu=cpu,
        bf16=bf16,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        use_vllm=rl.use_vllm,
        lr_scheduler_type="constant",
        learning_rate=cfg.optimizer.lr,  # for TRL's logs: the optimizer object sets the real rates
        disable_tqdm=False,
    )


def train_rlvr(cfg: DictConfig) -> dict[str, float]:
    """Train (GRPO or GMPO) and measure the test accuracy; returns the final metrics."""
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    validate_rlvr_config(cfg)
    run_dir = Path(cfg.output_dir)
    claim_run_directory(run_dir)
    if any(run_dir.glob("checkpoint-*")) and not cfg.rl.resume:  # TRL would train over them
        raise RunDirectoryInUse(
            f"{run_dir} already has checkpoints; resume with rl.resume=true, or start a new run with "
            "run_name=<new name>"
        )
    configure_caches(Path(os.environ.get("VLA_TRAIN_CACHE", ".cache")))
    if cfg.logger.mode != "disabled":
        os.environ.setdefault("WANDB_MODE", cfg.logger.mode)
        os.environ.setdefault("WANDB_PROJECT", cfg.logger.project)
        os.environ.setdefault("WANDB_DIR", str(run_dir.resolve()))
    resume_from = last_checkpoint(run_dir) if cfg.rl.resume else None  # none yet: a new run
    if resume_from is not None:
        check_resumed_config(run_dir / "config.yaml", cfg, CHANGEABLE_ON_RESUME)
        check_resumable(resume_from)
    else:  # a resumed run keeps the config it started with
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)

    from transformers import set_seed

    set_seed(cfg.rl.seed)
    model, tokenizer = load_policy_model(
        cfg.model.name_or_path,
        cfg.model.dtype,
        OmegaConf.to_container(cfg.model.tiny) if cfg.model.tiny is not None else None,
    )
    task = build_task(cfg.task, "task")
    cpu = cfg.rl.cpu or not torch.cuda.is_available()
    optimizer = build_rlvr_optimizer(model, optimizer_options(cfg.optimizer))
    (run_dir / "optimizer_assignment.txt").write_text(optimizer.summary + "\n")
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)  # the paper's constant lr
    evaluated = build_task(cfg.eval_task, "eval_task") if cfg.get("eval_task") is not None else task
    measure = functools.partial(
        evaluate_accuracy,
        tokenizer=tokenizer,
        rows=drop_overlong_prompts(evaluated.rows("test"), tokenizer, cfg.rl.max_prompt_length, "test"),
        reward=evaluated.reward,
        max_examples=cfg.rl.eval_examples,
        batch_size=cfg.rl.eval_batch_size,
        max_new_tokens=cfg.rl.max_completion_length,
    )
    metrics_log = MetricsLog(run_dir, "disabled", "", {})
    trainer = TRAINERS[cfg.algorithm.name](
        model=model,
        reward_funcs=task.reward,
        args=grpo_arguments(cfg, cpu),
        train_dataset=drop_overlong_prompts(task.rows("train"), tokenizer, cfg.rl.max_prompt_length, "train"),
        processing_class=tokenizer,
        optimizers=(optimizer, schedule),
        callbacks=[MetricsFile(metrics_log), PeriodicAccuracy(cfg.rl.eval_every, measure, metrics_log)],
        diagnostics_every=cfg.rl.diagnostics_every,
    )
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    history = [entry for entry in trainer.state.log_history if "reward" in entry]
    step = trainer.state.global_step
    metrics: dict[str, float] = {"step": float(step)}
    if history:
        metrics["train/reward"] = float(history[-1]["reward"])
    accuracy = measure(trainer.model, output_dir=run_dir / "eval" / f"step_{step}")  # every process: a share
    if trainer.is_world_process_zero():
        log_accuracy(metrics_log, accuracy, step)
    metrics.update(accuracy)
    log.info("RLVR run %s: %s", run_dir, metrics)
    return metrics


class MetricsFile(TrainerCallback):
    """TRL's logs (rewards, KL, clipping, lengths) also to ``metrics.jsonl``, one line per log, as every
    run of this project writes them (``scripts/report.py`` reads them); a resumed run drops the lines past
    its checkpoint first."""

    def __init__(self, metrics: MetricsLog) -> None:
        self.metrics = metrics

    def on_train_begin(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.metrics.truncate_after(state.global_step)

    def on_log(self, args: Any, state: TrainerState, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            self.metrics.log(logs, state.global_step)


class PeriodicAccuracy(TrainerCallback):
    """Test accuracy of the initial model and of every ``every``-th step's (the official runs' ``test_freq``
    and ``val_before_train``), the curves of Fig. 6: ``eval/accuracy`` lines in ``metrics.jsonl`` at the
    step measured, predictions in ``eval/step_<n>/``. Every process decodes a share; the last step is left
    to the run's final evaluation. ``every=0``: the final evaluation only."""

    def __init__(self, every: int, measure: Callable[..., dict[str, float]], metrics: MetricsLog) -> None:
        self.every, self.measure, self.metrics = every, measure, metrics

    def on_train_begin(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        if state.global_step == 0:
            self._evaluate(state, kwargs["model"])

    def on_step_end(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self._evaluate(state, kwargs["model"])

    def _evaluate(self, state: TrainerState, model: torch.nn.Module) -> None:
        if not self.every:
            return
        directory = Path(self.metrics.path).parent / "eval" / f"step_{state.global_step}"
        accuracy = self.measure(model, output_dir=directory)  # every process decodes its share
        if state.is_world_process_zero:
            log_accuracy(self.metrics, accuracy, state.global_step)


def log_accuracy(metrics: MetricsLog, accuracy: dict[str, float], step: int) -> None:
    """An accuracy line in ``metrics.jsonl``, and in the wandb run when TRL opened one."""
    metrics.log(accuracy, step)
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.log({**accuracy, "train/global_step": step})


class DiagnosedGRPOTrainer(GradientDiagnostics, GRPOTrainer):
    """TRL's GRPO, logging the paper's gradient SNR and effective rank."""


class DiagnosedGMPOTrainer(GradientDiagnostics, GMPOTrainer):
    """GMPO (:mod:`vla_train.rlvr.gmpo`), logging the paper's gradient SNR and effective rank."""


TRAINERS = {"grpo": DiagnosedGRPOTrainer, "gmpo": DiagnosedGMPOTrainer}
