"""LIBERO and LIBERO-Plus: the standard evaluation protocol, LeRobot training data, env clients.

``runtime`` (offline import), ``env`` (one task as a rollout env), ``plus`` (LIBERO-Plus task
selection and Table 1) and ``client`` need no torch; ``adapter`` is the training-side ``env=libero_*``.
"""
