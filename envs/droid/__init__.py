"""DROID (Franka, ROS-free): raw recordings → LeRobot datasets, training layout, robot-side client.

``raw``, ``transforms`` and ``client`` need no torch: the robot laptop imports them.
"""
