"""The trainer and logger groups' config schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class TrainerConfig:
    steps: int = 1500
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    num_workers: int = 4
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | cosine | multistep
    decay_steps: int | None = None  # cosine: the decay horizon (null: trainer.steps; openpi's π0.5 30k)
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "auto"  # auto (bf16 on GPU, no on CPU) | no | bf16 | fp16
    weight_dtype: str = "float32"  # bfloat16: the official runs' bf16 weights and states (README: Devices)
    cpu: bool = False
    # several processes: ddp (a whole model per process) | fsdp (FSDP2: parameters, gradients and
    # optimizer state sharded across processes; what π0.5 and VLANeXt need on 48 GB GPUs)
    strategy: str = "ddp"
    log_every: int = 10
    # off a terminal (SLURM, nohup, CI) progress is a plain line this often instead of a tqdm bar
    progress_interval_s: float = 30.0
    diagnostics_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0
    resume: Any = False  # false | true (latest in the run dir) | a checkpoint or run path
    max_nonfinite_steps: int = 10
    stop_at_step: int | None = None  # checkpoint and stop here (e.g. a time-limited job); resume later
    seed: int = 0


@dataclass
class LoggerConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "vla-train"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)


ConfigStore.instance().store(group="trainer", name="trainer_schema", node=TrainerConfig)
ConfigStore.instance().store(group="logger", name="logger_schema", node=LoggerConfig)
