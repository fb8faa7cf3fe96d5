"""Run modes: devices, speed and precision modes, the constant canvas, and the default
inference path (importing the package registers it with the engine: :mod:`port.run.prepared`)."""
from port.run import prepared as _prepared  # noqa: F401  (registers the engine's inference executor)
