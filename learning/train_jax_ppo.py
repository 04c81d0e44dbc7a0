"""Train a privileged-state teacher: `python learning/train_jax_ppo.py --env_name AlohaS2RPick`.

`--help` lists every flag; the command line is playground/training/teacher.py, the run
playground/training/ppo_run.py (SAC: sac_run.py).
"""

import playground  # noqa: F401  (XLA flags, compilation cache, headless rendering)
from playground.training import teacher

if __name__ == "__main__":
    teacher.main()
