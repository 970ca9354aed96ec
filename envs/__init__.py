"""Environments and their input/output transforms, shared by training data and rollouts.

Simulators (LIBERO, robosuite) are imported lazily inside the modules that need them, so these
configs import on machines without a simulator.
"""
