"""A pure-JAX sim-to-real manipulation pipeline (MJX tasks, Brax teachers, DAgger students, ONNX).

Importing the package sets the XLA flags that make MJX fastest on CPU and turns on JAX's
persistent compilation cache (see `playground.runtime`), before any JAX computation runs.
"""

from playground import runtime as _runtime

_runtime.configure()

__version__ = "0.1.0"
