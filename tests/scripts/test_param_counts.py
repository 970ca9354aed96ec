"""Full-size parameter counts on the meta device match the published model sizes."""

from __future__ import annotations

import pytest
from param_counts import count


def test_qwen3_vl_2b_counts_match_the_published_size() -> None:
    totals = count("qwen3_vl", "flow")
    backbone = sum(n for (modality, _), n in totals.items() if modality != "action")
    assert backbone == pytest.approx(2.1275e9, rel=1e-3)  # Qwen3-VL-2B-Instruct: 2.13 B parameters
    assert totals[("language", "adamw")] > 3e8  # the 151,936 × 2,048 embedding stays on AdamW
    action = totals[("action", "adamw")] + totals[("action", "pion")]
    assert action == pytest.approx(612e6, rel=0.01)  # VLANeXt's 29-block, 1024-wide DiT head


def test_prismatic_qwen25_language_model_is_the_half_billion_of_vla_adapter() -> None:
    totals = count("prismatic_qwen25", "l1")
    language = totals[("language", "adamw")] + totals[("language", "muon")]
    assert language == pytest.approx(494e6, rel=0.01)  # Qwen2.5-0.5B: 0.49 B
    action = totals[("action", "adamw")] + totals[("action", "pion")]
    # VLA-Adapter-Pro's policy, 217,864,223 parameters in the official head, of which film_gen's
    # 38,578,176 are unused (kept frozen here), + the 64 × 896 action queries
    assert action == 217_864_223 - 38_578_176 + 64 * 896
    assert totals[("untrained", "—")] == 38_578_176
    bridge = count("prismatic_qwen25", "l1_bridge")
    assert bridge[("action", "adamw")] + bridge[("action", "pion")] == pytest.approx(97e6, rel=0.02)
    vision = totals[("vision", "adamw")] + totals[("vision", "muon")]
    assert (
        6.5e8 < vision < 7.5e8
    )  # DINOv2 ViT-L + SigLIP So400m up to their second-to-last blocks + projector


def test_pi05_counts_match_the_published_checkpoint() -> None:
    from param_counts import PI05_UNUSED_EXPERT_LM_HEAD

    totals = count("pi05", "pi05")
    # lerobot/pi05_base's safetensors hold 3,616,757,520 parameters, the expert's unused lm_head included
    assert sum(totals.values()) + PI05_UNUSED_EXPERT_LM_HEAD == 3_616_757_520
    by_modality = {m: sum(n for (mm, _), n in totals.items() if mm == m) for m, _ in totals}
    assert by_modality["action"] == pytest.approx(430.1e6, rel=1e-3)  # Gemma-300M expert + projections
    assert by_modality["vision"] == pytest.approx(414.8e6, rel=1e-3)  # SigLIP So400m/14 + projector
    assert totals[("language", "adamw")] > 5.2e8  # the 257,152 × 2,048 embedding stays on AdamW
    assert totals[("action", "pion")] > 4.29e8 and totals[("language", "muon")] > 1.8e9


def test_low_precision_trainable_weights_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """Trained weights stay fp32 in every config; a bf16 override is flagged before training starts."""
    import torch
    from helpers import compose_train

    from vla_train.training import warn_if_weights_are_low_precision

    for backbone in ("prismatic_qwen25", "qwen3_vl", "pi05"):
        assert compose_train([f"backbone={backbone}"], None).backbone.dtype == "float32"
    model = torch.nn.Sequential(torch.nn.Linear(100, 100), torch.nn.Linear(100, 10).to(torch.bfloat16))
    assert warn_if_weights_are_low_precision(model) == 1010 and "bf16/fp16" in caplog.text
    model[1].requires_grad_(False)  # frozen low-precision weights are fine
    assert warn_if_weights_are_low_precision(model) == 0


def test_bf16_weights_lose_most_of_a_muon_step() -> None:
    from bench_weight_precision import main

    results = main(["--size", "128", "--lrs", "2.5e-5"])
    assert results[("muon", 2.5e-5)]["fp32_changed"] == 1.0
    assert results[("muon", 2.5e-5)]["bf16_changed"] < 0.5  # the reason the configs train fp32 weights
