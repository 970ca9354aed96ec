"""Backbones: images + instruction → feature tokens (see :class:`policies.base.Backbone`)."""
