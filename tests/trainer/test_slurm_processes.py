"""A submitit SLURM job of several tasks becomes one torch.distributed run (``hydra/launcher=slurm_8gpu``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from vla_train.training import join_slurm_job_processes

TASK_NINE_OF_SIXTEEN = {
    "SUBMITIT_EXECUTOR": "slurm",
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "16",
    "SLURM_PROCID": "9",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
}
EXPORTED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_TORCH_DEVICE")


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No SLURM or torch.distributed variables; whatever the code under test exports is removed after
    (a leftover RANK/WORLD_SIZE would make later runs wait for ranks that never come)."""
    saved = dict(os.environ)
    for name in (*EXPORTED, "LOCAL_WORLD_SIZE", *TASK_NINE_OF_SIXTEEN):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


def test_a_task_of_a_two_node_job_gets_its_rank_and_the_first_nodes_address(clean_environment) -> None:
    for name, value in TASK_NINE_OF_SIXTEEN.items():
        clean_environment.setenv(name, value)
    assert join_slurm_job_processes()
    assert os.environ["RANK"] == "9" and os.environ["WORLD_SIZE"] == "16" and os.environ["LOCAL_RANK"] == "1"
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["ACCELERATE_TORCH_DEVICE"] == "cuda:1"
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000  # the same on every task: seeded by the job id


def test_single_task_jobs_and_torchrun_processes_are_left_alone(clean_environment) -> None:
    for name, value in {**TASK_NINE_OF_SIXTEEN, "SLURM_NTASKS": "1"}.items():
        clean_environment.setenv(name, value)
    assert not join_slurm_job_processes() and "RANK" not in os.environ
    clean_environment.setenv("SLURM_NTASKS", "16")
    clean_environment.setenv("RANK", "3")  # torchrun inside the job set it already
    assert not join_slurm_job_processes() and os.environ["RANK"] == "3"


def test_the_8_gpu_launcher_composes_with_a_paper_preset(tmp_path) -> None:
    from helpers import compose_train

    cfg = compose_train(["experiment=vlanext_libero", "hydra/launcher=slurm_8gpu"], tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8 and launcher.nodes == 1
    assert "SlurmLauncher" in launcher._target_
