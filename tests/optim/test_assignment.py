"""Modality-wise assignment: every parameter lands in the expected group, bad rules fail loudly."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from vla_train.optim import (
    ModalityOptimizer,
    ModalityOptimizerOptions,
    Muon,
    Pion,
    assign_parameters,
    build_modality_optimizer,
)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        head_dim = width // heads
        self.norm = nn.LayerNorm(width)
        self.q_proj = nn.Linear(width, heads * head_dim)
        self.k_proj = nn.Linear(width, kv_heads * head_dim)
        self.v_proj = nn.Linear(width, kv_heads * head_dim)
        self.o_proj = nn.Linear(heads * head_dim, width)
        self.mlp = nn.Linear(width, 2 * width)


class TinyVLA(nn.Module):
    """Vision tower, language model with embeddings and LM head, action head with queries."""

    def __init__(self) -> None:
        super().__init__()
        self.vision = nn.ModuleDict(
            {"patch_embed": nn.Conv2d(3, 16, 4, 4), "blocks": nn.ModuleList([Block(16, 4, 4)])}
        )
        self.language = nn.ModuleDict(
            {
                "embed_tokens": nn.Embedding(50, 32),
                "layers": nn.ModuleList([Block(32, 4, 2)]),
                "lm_head": nn.Linear(32, 50),
            }
        )
        self.action_head = nn.ModuleDict(
            {"blocks": nn.ModuleList([Block(24, 3, 3)]), "output": nn.Linear(24, 7)}
        )
        self.action_queries = nn.Parameter(torch.zeros(8, 24))
        self.frozen = nn.Linear(4, 4).requires_grad_(False)


RULES = [
    {"pattern": r"^vision\.", "modality": "vision"},
    {"pattern": r"^language\.", "modality": "language"},
    {"pattern": r"^action_head\.", "modality": "action"},
    {"pattern": r"^action_queries$", "modality": "action"},
]
ADAMW = [r"embed_tokens", r"lm_head", r"action_head\.output\.", r"action_queries"]
HEADS = [
    {"pattern": r"\.(q|k|v)_proj\.weight$", "head_dim": 8, "axis": 0},
    {"pattern": r"\.o_proj\.weight$", "head_dim": 8, "axis": 1},
]


def by_name(assignments) -> dict[str, tuple[str, str]]:
    return {a.name: (a.modality, a.algorithm) for a in assignments}


def test_paper_assignment_routes_every_parameter() -> None:
    model = TinyVLA()
    result = by_name(
        assign_parameters(
            model.named_parameters(), RULES, {"vision": "muon", "language": "muon", "action": "pion"}, ADAMW
        )
    )
    expected = {
        "vision.patch_embed.weight": ("vision", "muon"),  # conv kernel: a matrix once flattened
        "vision.patch_embed.bias": ("vision", "adamw"),
        "vision.blocks.0.q_proj.weight": ("vision", "muon"),
        "vision.blocks.0.norm.weight": ("vision", "adamw"),
        "language.embed_tokens.weight": ("language", "adamw"),
        "language.lm_head.weight": ("language", "adamw"),
        "language.layers.0.k_proj.weight": ("language", "muon"),
        "language.layers.0.mlp.bias": ("language", "adamw"),
        "action_head.blocks.0.o_proj.weight": ("action", "pion"),
        "action_head.blocks.0.mlp.weight": ("action", "pion"),
        "action_head.output.weight": ("action", "adamw"),
        "action_queries": ("action", "adamw"),
    }
    for name, where in expected.items():
        assert result[name] == where, name
    assert "frozen.weight" not in result
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(result) == trainable


def test_built_optimizer_has_one_group_per_modality_and_algorithm_and_covers_everything() -> None:
    model = TinyVLA()
    optimizer = build_modality_optimizer(model, RULES, adamw_patterns=ADAMW, lr=1e-3, weight_decay=0.1, kp=1)
    assert isinstance(optimizer, ModalityOptimizer)
    assert set(optimizer.optimizers) == {"adamw", "muon", "pion"}
    assert isinstance(optimizer.optimizers["pion"], Pion) and isinstance(optimizer.optimizers["muon"], Muon)
    assert isinstance(optimizer.optimizers["adamw"], torch.optim.AdamW)
    names = sorted(group["name"] for group in optimizer.param_groups)
    assert names == [
        "action/adamw/aux",
        "action/pion",
        "language/adamw/aux",
        "language/muon",
        "vision/adamw/aux",
        "vision/muon",
    ]
    owned = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert len(owned) == len(set(owned)) == sum(1 for p in model.parameters() if p.requires_grad)
    assert optimizer.optimizers["pion"].param_groups[0]["kp"] == 1
    # the summary names the rules and counts, as logged
    assert "action_head" in optimizer.summary and "pion" in optimizer.summary
    pion_numel = sum(p.numel() for p in optimizer.optimizers["pion"].param_groups[0]["params"])
    assert f"{pion_numel:,}" in optimizer.summary


def test_aux_lr_ratio_scales_only_what_is_adamw_whatever_the_modality_chose() -> None:
    """VLANeXt's official AdamW_aux: embeddings, outputs, norms, biases at 0.1 × lr; a modality that
    chose AdamW (here vision) keeps the full lr for its matrices."""
    optimizer = build_modality_optimizer(
        TinyVLA(), RULES, vision="adamw", adamw_patterns=ADAMW, lr=1e-3, aux_lr_ratio=0.1
    )
    lr_of = {name: group["lr"] for group in optimizer.param_groups for name in group["param_names"]}
    assert lr_of["vision.blocks.0.q_proj.weight"] == pytest.approx(1e-3)  # AdamW by choice
    assert lr_of["language.layers.0.k_proj.weight"] == pytest.approx(1e-3)  # Muon
    assert lr_of["action_head.blocks.0.o_proj.weight"] == pytest.approx(1e-3)  # Pion
    for auxiliary in (
        "vision.blocks.0.norm.weight",
        "language.embed_tokens.weight",
        "action_head.output.weight",
    ):
        assert lr_of[auxiliary] == pytest.approx(1e-4), auxiliary


def test_one_options_object_and_each_algorithm_takes_only_its_own_fields() -> None:
    options = ModalityOptimizerOptions(language="lrmuon", kp=3, rank=4, compute_dtype="float64")
    optimizer = build_modality_optimizer(TinyVLA(), RULES, options, adamw_patterns=ADAMW, tau=0.3)
    pion = optimizer.optimizers["pion"].param_groups[0]
    assert pion["kp"] == 3 and pion["compute_dtype"] == "float64" and "rank" not in pion and "tau" not in pion
    lrmuon = optimizer.optimizers["lrmuon"].param_groups[0]
    assert lrmuon["rank"] == 4 and "kp" not in lrmuon
    assert lrmuon["compute_dtype"] == "float32"  # its SVD needs fp32: it takes no compute_dtype
    assert options.kp == 3 and options.tau == 0.5  # overrides leave the caller's object as it was
    with pytest.raises(TypeError, match="kappa"):
        build_modality_optimizer(TinyVLA(), RULES, options, adamw_patterns=ADAMW, kappa=2)


def test_table_a6_settings_are_expressible() -> None:
    model = TinyVLA()
    optimizer = build_modality_optimizer(
        model, RULES, vision="adamw", language="muon", action="adamw", adamw_patterns=ADAMW
    )  # S4
    assert set(optimizer.optimizers) == {"adamw", "muon"}
    muon_names = {n for g in optimizer.optimizers["muon"].param_groups for n in g["param_names"]}
    assert muon_names and all(n.startswith("language.") for n in muon_names)


def test_per_head_mode_only_for_chosen_modalities() -> None:
    model = TinyVLA()
    optimizer = build_modality_optimizer(
        model, RULES, adamw_patterns=ADAMW, per_head_rules=HEADS, per_head_modalities=["action"]
    )
    pion_groups = {g["name"]: g for g in optimizer.optimizers["pion"].param_groups}
    rows, columns = pion_groups["action/pion/heads8x_axis0"], pion_groups["action/pion/heads8x_axis1"]
    assert set(rows["param_names"]) == {f"action_head.blocks.0.{p}_proj.weight" for p in "qkv"}
    assert rows["per_head"] == {"head_dim": 8, "num_heads": None, "axis": 0}
    assert columns["param_names"] == ["action_head.blocks.0.o_proj.weight"]
    assert columns["per_head"] == {"head_dim": 8, "num_heads": None, "axis": 1}
    assert not pion_groups["action/pion"]["per_head"]  # the MLP stays in default mode
    assert all(not g.get("per_head") for g in optimizer.optimizers["muon"].param_groups)


def test_step_zero_grad_and_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = TinyVLA()
    optimizer = build_modality_optimizer(model, RULES, adamw_patterns=ADAMW, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    assert all(group["lr"] == pytest.approx(5e-3) for group in optimizer.param_groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    optimizer.step()
    scheduler.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert "frozen.weight" not in changed and len(changed) == sum(
        1 for p in model.parameters() if p.requires_grad
    )
    assert optimizer.state[model.action_head["blocks"][0].q_proj.weight]["momentum_buffer"].shape == (24, 24)
    assert "exp_avg" in optimizer.state[model.action_queries]
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    restored = build_modality_optimizer(model, RULES, adamw_patterns=ADAMW, lr=1e-2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    key = model.language["layers"][0].q_proj.weight
    assert torch.equal(restored.state[key]["momentum_buffer"], optimizer.state[key]["momentum_buffer"])
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="algorithms"):
        build_modality_optimizer(model, RULES, adamw_patterns=ADAMW, action="muon").load_state_dict(
            optimizer.state_dict()
        )


def test_unmatched_parameter_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"action_queries"):
        assign_parameters(
            TinyVLA().named_parameters(),
            RULES[:3],
            {"action": "pion"} | {"vision": "muon", "language": "muon"},
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rules": [*RULES, {"pattern": "^visoin", "modality": "vision"}]}, "visoin"),
        ({"rules": [{"pattern": "^vision", "modality": "sight"}]}, "sight"),
        ({"rules": [{"pattern": "([", "modality": "vision"}]}, "regular expression"),
        ({"adamw_patterns": ["lm_haed"]}, "lm_haed"),
        ({"action": "sgd"}, "sgd"),
        (
            {"per_head_rules": [{"pattern": "qkv_fused", "head_dim": 8}], "per_head_modalities": ["action"]},
            "qkv_fused",
        ),
    ],
)
def test_bad_rules_fail_loudly(kwargs: dict, message: str) -> None:
    options = {"rules": RULES, "adamw_patterns": ADAMW} | kwargs
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build_modality_optimizer(TinyVLA(), **options)


def test_wrapper_rejects_added_groups() -> None:
    optimizer = build_modality_optimizer(TinyVLA(), RULES, adamw_patterns=ADAMW)
    with pytest.raises(NotImplementedError):
        optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(2, 2))]})


def test_scheduler_reaches_the_wrapped_optimizers_after_load_state_dict() -> None:
    """torch's load_state_dict replaces group dicts; the wrapper must follow (accelerate.prepare does it)."""
    model = TinyVLA()
    optimizer = build_modality_optimizer(model, RULES, adamw_patterns=ADAMW, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.1 * (step + 1))
    optimizer.load_state_dict(optimizer.state_dict())
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    expected = scheduler.get_last_lr()[0]
    assert expected == pytest.approx(1e-2 * 0.4)
    for inner in optimizer.optimizers.values():
        assert all(group["lr"] == pytest.approx(expected) for group in inner.param_groups)
    assert len(optimizer.param_groups) == sum(len(o.param_groups) for o in optimizer.optimizers.values())
