"""``train(cfg) -> metrics``: everything ``python train.py ...`` does, callable from tests and notebooks."""

from __future__ import annotations

import importlib
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from envs.base import EnvAdapter
from policies.vla_policy import VLAPolicy
from vla_train.config import ConfigError, validate_config
from vla_train.evaluation import evaluate_policy
from vla_train.trainer.checkpoint import checkpoint_name, list_checkpoints, resolve_resume
from vla_train.trainer.loop import TrainingLoop
from vla_train.trainer.run_directory import claim_run_directory
from vla_train.trainer.sharding import shard_policy

log = logging.getLogger(__name__)


class RunDirectoryInUse(FileExistsError):
    """The run directory already holds checkpoints and the config did not ask to resume."""


#: what a resumed run may change without changing what it trains (dotted prefixes)
CHANGEABLE_ON_RESUME = (
    "trainer.resume",
    "trainer.stop_at_step",
    "trainer.num_workers",
    "trainer.log_every",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "trainer.eval_every",
    "trainer.diagnostics_every",  # its passes use their own generator (tested: training unchanged)
    "trainer.max_nonfinite_steps",
    "trainer.cpu",
    "logger",
    "evaluate",
    "env.eval",
    "env.simulator",  # rollouts and recording only (assets and config paths differ between nodes)
    "env.dataset.cache_in_memory",
    "output_dir",
    "run_name",
)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": leaf}`` of a nested container (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def load_saved_config(config_file: Path) -> DictConfig:
    """The ``config.yaml`` a run saved; a damaged one is named in one line (yaml's parser errors span
    several and do not say what to do)."""
    try:
        saved = OmegaConf.load(config_file)
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(
            f"{config_file} is not readable YAML ({type(error).__name__}: {first_line}); a run's checkpoints "
            "are resumed, evaluated and served with the config it saved: restore that file"
        ) from error
    if not isinstance(saved, DictConfig):
        raise ValueError(f"{config_file} holds a YAML list, not the mapping of config groups a run saves")
    return saved


def check_resumed_config(saved_path: Path, cfg: DictConfig, changeable: Sequence[str] | None = None) -> None:
    """Refuse to resume with settings that change what the run trains; name every one of them.

    ``changeable``: the dotted prefixes a resumed run may change (default: train.py's
    :data:`CHANGEABLE_ON_RESUME` and the parts' pretrained-weight sources)."""
    if not saved_path.is_file():
        return
    saved = flatten(OmegaConf.to_container(load_saved_config(saved_path), resolve=False))
    current = flatten(OmegaConf.to_container(cfg, resolve=True))
    if (
        changeable is None
    ):  # where pretrained weights come from does not matter once a checkpoint replaces them
        changeable = list(CHANGEABLE_ON_RESUME) + [
            f"{part}.{key}"
            for part in ("backbone", "head")
            for key in getattr(get_class(cfg[part]._target_), "weight_sources", ())
        ]
    changed = {
        key: (saved[key], current.get(key, "<absent>"))
        for key in sorted(saved)  # options added since the run started are not in its config: skipped
        if not _same(saved[key], current.get(key, "<absent>"))
        and not any(key == p or key.startswith(p + ".") for p in changeable)
    }
    if changed:
        shown = "; ".join(
            f"{key}: {old!r} in the run, {new!r} now"
            for key, old, new in ((k, *v) for k, v in changed.items())
        )
        raise ConfigError(
            f"resuming {saved_path.parent} with settings that differ from the run's ({saved_path}): {shown}. "
            "Resume with the run's values, or start a new run with run_name=<new name>"
        )


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def configure_caches(cache_root: Path) -> None:
    """Keep Hugging Face, LeRobot, wandb, LIBERO and Mesa caches out of the user's home.

    A variable the user has set wins; otherwise each cache goes under ``cache_root``.
    """
    defaults = {
        "HF_HOME": "huggingface",
        "HF_LEROBOT_HOME": "lerobot",
        "LIBERO_CONFIG_PATH": "libero",
        "MESA_SHADER_CACHE_DIR": "mesa",
        "MPLCONFIGDIR": "matplotlib",
        "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    }
    for variable, sub in defaults.items():
        os.environ.setdefault(variable, str((cache_root / sub).resolve()))


def join_slurm_job_processes() -> bool:
    """A SLURM job of several tasks (``hydra/launcher=slurm_8gpu``: one task per GPU, on one or more
    nodes) is one training run: give each task torch.distributed's rank, world size, local rank and the
    first node's address (submitit's ``TorchDistributedEnvironment``), as torchrun would. Returns whether
    it did; a task that already has a rank (torchrun, accelerate launch inside the job) is left alone."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or "RANK" in os.environ:  # not a submitit job
        return False
    if int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return False
    from submitit.helpers import TorchDistributedEnvironment

    environment = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    os.environ.setdefault("ACCELERATE_TORCH_DEVICE", f"cuda:{environment.local_rank}")
    return True


def pin_sweep_job_to_gpu() -> None:
    """A joblib sweep runs several jobs on one machine: job ``k`` trains on GPU ``k mod #GPUs``.

    (SLURM jobs get their own GPU from the scheduler; a device the user chose wins.)
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or "ACCELERATE_TORCH_DEVICE" in os.environ:
        return
    hydra_cfg = HydraConfig.get()
    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    if hydra_cfg.mode != RunMode.MULTIRUN or "joblib" not in launcher or not torch.cuda.is_available():
        return
    os.environ["ACCELERATE_TORCH_DEVICE"] = f"cuda:{int(hydra_cfg.job.num) % torch.cuda.device_count()}"


def resolve_mixed_precision(option: str, accelerator_device: str, weight_dtype: str = "float32") -> str:
    """``auto``: bf16 autocast on GPUs, and wherever the weights themselves are bf16 (the matmuls of
    fp32 inputs and bf16 weights need it); none on CPUs otherwise."""
    if option == "auto":
        return "bf16" if accelerator_device == "cuda" or weight_dtype == "bfloat16" else "no"
    if option == "fp16" and accelerator_device == "cpu":  # accelerate would train in fp32 and say nothing
        raise ConfigError(
            "trainer.mixed_precision=fp16: CPUs have no fp16 autocast; use 'bf16', 'no' or 'auto' "
            "(fp16 needs a GPU)"
        )
    return option


def cast_trained_weights(policy: torch.nn.Module, dtype: str) -> None:
    """``trainer.weight_dtype=bfloat16``: store every parameter in bf16, as the paper's official runs do
    (their optimizer states follow); buffers such as normalization statistics stay as they are."""
    if dtype == "float32":
        return
    with torch.no_grad():
        for parameter in policy.parameters():
            if parameter.is_floating_point():
                parameter.data = parameter.data.to(getattr(torch, dtype))


def without_weight_sources(part: DictConfig) -> DictConfig:
    """``part`` with the keys that only say where to load pretrained weights from set to null.

    A class lists them in ``weight_sources`` (π0.5: ``pretrained``); building from a checkpoint of our
    own (resuming, serving) then neither downloads nor reads weights that are overwritten right away.
    """
    keys = getattr(get_class(part._target_), "weight_sources", ())
    if not keys:
        return part
    part = part.copy()
    for key in keys:
        part[key] = None
    return part


def build_policy(
    cfg: DictConfig, stats: Any, state_key: str, action_key: str, pretrained_weights: bool = True
) -> VLAPolicy:
    """The policy of ``cfg``; ``pretrained_weights=False`` when a checkpoint of ours will fill it."""
    backbone, head = cfg.backbone, cfg.head
    if not pretrained_weights:
        backbone, head = without_weight_sources(backbone), without_weight_sources(head)
    policy = VLAPolicy(
        backbone=instantiate(backbone),
        head=instantiate(head),
        action_dim=cfg.env.action_dim,
        state_dim=cfg.env.state_dim,
        chunk_size=cfg.env.chunk_size,
        n_action_steps=cfg.env.n_action_steps,
        augmentation=instantiate(cfg.env.augmentation) if cfg.env.augmentation else None,
        state_normalization=cfg.env.get("state_normalization"),  # None: the head's own
        action_normalization=cfg.env.get("action_normalization"),
    )
    if stats is not None:
        policy.set_normalization(stats, state_key, action_key)
    return policy


def warn_if_weights_are_low_precision(policy: torch.nn.Module) -> int:
    """Trainable bf16/fp16 weights lose most of each fine-tuning step to rounding (README, Devices);
    returns how many there are, after warning."""
    low = sum(
        p.numel()
        for p in policy.parameters()
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)
    )
    if low:
        log.warning(
            "%.1f M trainable parameters are stored in bf16/fp16: at fine-tuning learning rates most of "
            "each optimizer step rounds away (scripts/bench_weight_precision.py). Train with "
            "backbone.dtype=float32; bf16 autocast (trainer.mixed_precision) keeps the matmuls fast.",
            low / 1e6,
        )
    return low


def build_env_adapter(env_cfg: DictConfig) -> EnvAdapter:
    """The env's adapter class (``env.adapter``, an import path) built on ``env_cfg``; imported here
    rather than with Hydra's ``get_class``, which logs a three-line report before raising."""
    module_name, _, name = str(env_cfg.adapter).rpartition(".")
    try:
        adapter = getattr(importlib.import_module(module_name), name, None) if module_name else None
    except ImportError:
        adapter = None
    if not (isinstance(adapter, type) and issubclass(adapter, EnvAdapter)):
        raise ValueError(
            f"env.adapter={env_cfg.adapter}: not an importable EnvAdapter class; an env's adapter is an "
            "import path such as envs.robosuite.lift.RobosuiteLiftAdapter"
        )
    return adapter(env_cfg)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (and, with ``evaluate``, evaluate) one policy; returns the final metrics."""
    if "hydra" in cfg:  # composed with return_hydra_config (tests, notebooks): Hydra's own node is not ours
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    validate_config(cfg)
    adapter = build_env_adapter(cfg.env)
    adapter.check_evaluation_options()  # now, not when the final evaluation starts
    run_dir = Path(cfg.output_dir)
    claim_run_directory(run_dir)  # before anything is written: a directory of the user's is refused
    # shared by the runs started from one directory, so hub weights and datasets download once
    configure_caches(Path(os.environ.get("VLA_TRAIN_CACHE", ".cache")))
    resume_from = resolve_resume(cfg.trainer.resume, run_dir)
    if resume_from is None and list_checkpoints(run_dir):
        raise RunDirectoryInUse(
            f"{run_dir} already has checkpoints; resume with trainer.resume=true, or start a new run with "
            "run_name=<new name>"
        )
    if resume_from is not None:  # checkpoints/step_N → the run directory that holds its config
        check_resumed_config(resume_from.parent.parent / "config.yaml", cfg)
    if resume_from is None or not (run_dir / "config.yaml").is_file():  # a resumed run keeps its own
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)

    cpu = cfg.trainer.cpu or not torch.cuda.is_available()
    if not join_slurm_job_processes() and not cpu:
        pin_sweep_job_to_gpu()
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=resolve_mixed_precision(
            cfg.trainer.mixed_precision, "cpu" if cpu else "cuda", cfg.trainer.weight_dtype
        ),
    )
    set_seed(cfg.trainer.seed)
    data = adapter.training_data()
    policy = build_policy(
        cfg, data.stats, data.state_key, data.action_key, pretrained_weights=resume_from is None
    )
    cast_trained_weights(policy, cfg.trainer.weight_dtype)
    if cfg.trainer.weight_dtype == "float32":
        warn_if_weights_are_low_precision(policy)
    if cfg.trainer.get("strategy", "ddp") == "fsdp":  # before the optimizer: it steps the shards
        shard_policy(policy, accelerator.device)
    rules = policy.optimizer_rules()
    optimizer = instantiate(cfg.optimizer)(
        policy, rules.modality_rules, adamw_patterns=rules.adamw_patterns, per_head_rules=rules.per_head_rules
    )
    loop = TrainingLoop(
        cfg,
        accelerator,
        policy,
        optimizer,
        data,
        run_dir,
        resume_from,
        periodic_evaluation=lambda policy, step: evaluate_policy(
            policy, adapter, run_dir / "eval" / checkpoint_name(step), fail_if_all_errored=False
        ),
    )
    try:
        result = loop.run()
        if not result.pop("finished"):
            return result
        del result["interrupted"]
        if cfg.evaluate and accelerator.is_main_process:  # only this one fails if every episode errored
            evaluated = policy
            if loop.sharded:  # the sharded policy needs every process: evaluate the saved whole weights
                from vla_train.inference import load_policy

                evaluated = load_policy(loop.checkpoint, device=str(accelerator.device))[1]
            try:
                evaluation = evaluate_policy(evaluated, adapter, run_dir / "eval" / loop.checkpoint.name)
            except KeyboardInterrupt:  # what the interruption kept, for the one error line (vla_train.cli)
                raise KeyboardInterrupt(
                    f"training finished, checkpoint {loop.checkpoint} saved, the finished episodes kept in "
                    f"{run_dir / 'eval' / loop.checkpoint.name}; scripts/eval.py {run_dir} continues the "
                    "evaluation"
                ) from None
            loop.log(evaluation)
            result.update(evaluation)
    finally:
        loop.close()
    if accelerator.is_main_process:
        report_finished_run(result, loop.checkpoint, run_dir)
    return result


def report_finished_run(result: dict[str, float], checkpoint: Path, run_dir: Path) -> None:
    """Where the run's outputs are, on the console."""
    print(
        f"done: {int(result['step'])} steps\n  checkpoint: {checkpoint}\n  metrics:    "
        f"{run_dir / 'metrics.jsonl'}"
    )
    if "eval/success_rate" in result:
        evaluation_dir = run_dir / "eval" / checkpoint_name(int(result["step"]))
        print(
            f"  success rate: {result['eval/success_rate']:.1%} over {int(result['eval/episodes'])} "
            f"episodes; videos and episodes.jsonl in {evaluation_dir}"
        )
