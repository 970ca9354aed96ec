"""Training data as LeRobot datasets: writing demonstrations, reading samples with action chunks."""
