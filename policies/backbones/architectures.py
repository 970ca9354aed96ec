"""Published architecture hyperparameters of the full-size models, for offline work on the meta device.

With internet the real configs come with the weights (``from_pretrained``); these copies only let
scripts count parameters and time optimizer steps at full size without downloading anything. Values are
those of the models' published ``config.json`` files (hub ids in the names).
"""

from __future__ import annotations

# Qwen/Qwen2.5-0.5B: VLA-Adapter's language model.
QWEN25_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
)

# Qwen/Qwen3-VL-2B-Instruct: VLANeXt's backbone.
QWEN3_VL_2B = dict(
    image_token_id=151655,
    video_token_id=151656,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    tie_word_embeddings=True,
    text_config=dict(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        rope_theta=5000000,
        rope_scaling={"rope_type": "default", "mrope_interleaved": True, "mrope_section": [24, 20, 20]},
        attention_bias=False,
        tie_word_embeddings=True,
    ),
    vision_config=dict(
        depth=24,
        hidden_size=1024,
        intermediate_size=4096,
        num_heads=16,
        hidden_act="gelu_pytorch_tanh",
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=2048,
        num_position_embeddings=2304,
        deepstack_visual_indexes=[5, 11, 17],
    ),
)

# π0.5 (lerobot/pi05_base, Physical-Intelligence/openpi): PaliGemma-3B-224 (SigLIP So400m/14 + Gemma-2B).
# The checkpoint ships no transformers config; openpi and lerobot build it from these values.
PALIGEMMA_3B = dict(
    image_token_index=257152,
    vocab_size=257152,
    projection_dim=2048,
    hidden_size=2048,
    text_config=dict(
        model_type="gemma",
        vocab_size=257152,
        hidden_size=2048,
        intermediate_size=16384,
        num_hidden_layers=18,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=256,
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
    ),
    vision_config=dict(
        model_type="siglip_vision_model",
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        patch_size=14,
        image_size=224,
        vision_use_head=False,
    ),
)

# π0.5's action expert: Gemma-300M-shaped (width 1024, MLP 4096); depth, heads and head size are the VLM's
# (the two attend jointly), so they are read from the backbone.
GEMMA_300M_EXPERT = dict(width=1024, mlp_dim=4096)
