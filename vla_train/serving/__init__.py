"""Serve a policy over a local websocket: the env clients of an evaluation, or a real robot, call it.

``wire`` and ``client`` need only NumPy, msgpack and websockets, so env clients run in other Python
environments (LIBERO-Plus) and on robot computers; ``server`` runs beside the policy.
"""
