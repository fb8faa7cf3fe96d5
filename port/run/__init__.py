"""Run modes: devices, speed and precision modes, the constant canvas."""
