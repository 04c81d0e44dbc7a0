"""How a run goes, apart from what it trains: the options a command line hands to the run code.

The run config (playground/training/run_config.py) says what is trained and is stored with the
run; these options say how this process runs it (resume point, logging, evaluations, video,
devices) and are not stored. A command line builds one `RunOptions` from its flags; the run code
(ppo_run.py, sac_run.py, dagger_run.py) reads only this, never the parsed flags.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RunOptions:
    load_checkpoint_path: str | None = None  # resume (or, with play_only, evaluate) this run
    play_only: bool = False  # only evaluate and render the loaded checkpoint (PPO)
    run_evals: bool = True  # held-out evaluation after every epoch (PPO)
    use_tb: bool = True  # TensorBoard scalars in <run>/tb
    use_wandb: bool = False  # also Weights & Biases
    progress: bool = True  # the console progress bar
    render_final_policy: bool = True  # <run>/rollout.mp4 of the final policy (teachers)
    num_videos: int = 3  # episodes in the run's video
    max_devices_per_host: int | None = None  # local devices to use (None: all)
