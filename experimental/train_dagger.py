"""Distil a state-based teacher into a pixel student: `python experimental/train_dagger.py`.

    python experimental/train_dagger.py --domain-randomization
    python experimental/train_dagger.py --teacher logs/FrankaReach-<ts>/policy.safetensors

`--help` lists every flag; the command line is playground/training/distill.py, the run
playground/training/dagger_run.py.
"""

import playground  # noqa: F401  (XLA flags, compilation cache, headless rendering)
from playground.training import distill

if __name__ == "__main__":
    distill.main()
