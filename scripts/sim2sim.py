"""Runs an exported ONNX policy on a native-MuJoCo stand-in robot; see playground/deploy/sim2sim.py.

python scripts/sim2sim.py --onnx logs/FrankaReach-<ts>/onnx/teacher.onnx --env FrankaReach
"""

# ruff: noqa: I001  (playground is imported first on purpose)
import playground  # noqa: F401  (XLA flags, compilation cache, headless MUJOCO_GL)

import sys

from playground.deploy import sim2sim

if __name__ == "__main__":
    sim2sim.main(sys.argv[1:])
