"""Reinforcement learning with verifiable rewards (the paper's RLVR regime: GRPO/GMPO on Qwen3)."""
