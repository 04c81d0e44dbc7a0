"""Export trained policies to ONNX: `python experimental/jax2onnx/aloha_nets_to_onnx.py
--checkpoint_path RUN`.

`--help` lists every flag; the export lives in playground/deploy/ (export.py, export_cli.py).
"""

import sys

import playground  # noqa: F401  (XLA flags, compilation cache, headless rendering)
from playground.deploy import export_cli

if __name__ == "__main__":
    export_cli.main(sys.argv[1:])
