"""The schema of ``configs/rlvr/rlvr.yaml`` (``python train_rlvr.py``): typos and wrong types fail at
compose time, naming the key; ranges are checked by :func:`vla_train.rlvr.training.validate_rlvr_config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from vla_train.trainer.schema import LoggerConfig


@dataclass
class RLVRModelConfig:
    name_or_path: str | None = None  # a hub id (Qwen/Qwen3-1.7B) or a local directory
    dtype: str = "float32"  # the trained weights; bf16 autocast comes from rl.mixed_precision
    tiny: Any = None  # Qwen3Config fields (+ alphabet): a random tiny model and a character tokenizer
    gradient_checkpointing: bool = False


@dataclass
class AlgorithmConfig:
    name: str = "grpo"  # grpo (TRL's GRPOTrainer) | gmpo (its subclass with GMPO's loss)
    loss_type: str = "dapo"  # TRL's token aggregation for grpo; dapo = verl's token-mean
    epsilon: float = 0.2  # the ratio's clip range (gmpo: in log space)
    epsilon_high: float | None = None  # null: epsilon
    beta: float = 0.0  # the KL penalty to the reference model (k3 estimate, verl's low_var_kl)


@dataclass
class RLTrainerConfig:
    steps: int = 100  # optimizer steps
    prompts_per_step: int = 256  # prompts whose groups make one optimizer step (verl's ppo_mini_batch_size)
    prompts_per_generation: int | None = None  # null: prompts_per_step (verl's train_batch_size)
    group_size: int = 5  # completions per prompt (verl's rollout.n)
    micro_batch: int = 16  # completions per forward/backward pass on one device
    max_prompt_length: int | None = (
        None  # longer prompts are dropped (verl's filter_overlong_prompts); null: none
    )
    max_completion_length: int = 1024
    temperature: float = 1.0
    seed: int = 42
    log_every: int = 1
    save_every: int = 20
    diagnostics_every: int = 5  # gradient SNR / effective rank per module every N steps (0: never)
    resume: bool = False
    eval_every: int = (
        5  # test accuracy every N steps and before training (the official test_freq); 0: at the end
    )
    eval_examples: int | None = None  # test-split examples per evaluation (null: all)
    eval_batch_size: int = 32
    mixed_precision: str = "auto"  # auto (bf16 on GPUs) | no | bf16
    cpu: bool = False
    use_vllm: bool = False  # generation through vLLM when it is installed (TRL's colocate mode)


@dataclass
class RLVRConfig:
    model: RLVRModelConfig = MISSING
    task: Any = MISSING  # a _target_ node: vla_train.rlvr.tasks.GSM8KTask, MathTask, ArithmeticTask
    eval_task: Any = None  # where the test accuracy is measured (its test split); null: the task's own
    optimizer: Any = MISSING  # the optimizer group's schema (ModalityOptimizerOptions); language is used
    algorithm: AlgorithmConfig = MISSING
    rl: RLTrainerConfig = field(default_factory=RLTrainerConfig)
    logger: LoggerConfig = MISSING
    run_name: str = MISSING
    output_dir: str = MISSING


def register_rlvr_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="rlvr_schema", node=RLVRConfig)
    store.store(group="model", name="rlvr_model_schema", node=RLVRModelConfig)
    store.store(group="algorithm", name="algorithm_schema", node=AlgorithmConfig)
