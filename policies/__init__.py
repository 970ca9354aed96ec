"""VLA policies: a backbone (images + instruction → features) and an action head (features → actions)."""
