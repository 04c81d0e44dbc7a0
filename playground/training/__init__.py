"""Training: the teacher and student trainers, their run plumbing and their command lines.

- Algorithms: `ppo` (the PPO loop on brax's parts, with a resumable training state), `dagger` (the
  DAgger loop: rollout, aggregated buffer, updates), `ppo_params` (per-task PPO and SAC
  hyperparameters).
- Runs: `ppo_run`, `sac_run` and `dagger_run` (one run each: build, train, evaluate, write the
  run folder), `run_config` (run configs from defaults and flags, their checks, resume checks,
  the env built once), `options` (`RunOptions`, how a run goes), `checkpoint` (orbax checkpoints
  of the whole training state), `evaluate` (held-out success, return and reward terms),
  `run_logger` (console progress, TensorBoard, metrics.jsonl, learning curve), `run_files` (run
  folders, JSON files, KEY=VALUE overrides), `video` (rollout and camera videos).
- Command lines: `teacher` (learning/train_jax_ppo.py), `distill` (experimental/train_dagger.py).
- `policy_file`: the old import path of `playground.files.policy_file`, kept for users' code.

docs/teachers.md and docs/distillation.md describe the command lines and the run folders.
"""
