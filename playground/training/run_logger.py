"""What a training run shows and leaves behind: console progress, TensorBoard, metrics, curve.

Console: a tqdm bar over env steps (steps/s and ETA from tqdm) with the latest evaluation reward
and success rate. Files in the run folder: TensorBoard scalars (`tb/`), every logged metric as
one JSON line per evaluation (`metrics.jsonl`, appended across resumes), and at the end a
learning-curve PNG (`learning_curve.png`). Weights & Biases is optional (`use_wandb`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"


class RunLogger:
    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int = 0,
        use_tb: bool = True,
        use_wandb: bool = False,
        config: dict[str, Any] | None = None,
        show_progress: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if use_tb:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        self._wandb = None
        if use_wandb:
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError(
                    "--use_wandb needs the wandb package: pip install wandb (or drop the flag; "
                    "TensorBoard logs are written with --use_tb)."
                ) from e
            self._wandb = wandb.init(
                project="s2r-playground", name=self.run_dir.name, config=config, resume="allow"
            )
        self._bar = tqdm(
            total=total_steps,
            initial=start_step,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            disable=not show_progress,
        )
        self._step = start_step

    def log(self, step: int, metrics: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        if self._tb is not None:
            for name, value in finite.items():
                self._tb.add_scalar(name, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(finite, step=step)
        with (self.run_dir / METRICS_FILE).open("a") as f:
            f.write(json.dumps({"step": step, **finite}) + "\n")
        self._bar.update(max(step - self._step, 0))
        self._step = max(self._step, step)
        shown = {}
        if "eval/episode_reward" in finite:
            shown["reward"] = f"{finite['eval/episode_reward']:.2f}"
        if "eval/success_rate" in finite:
            shown["success"] = f"{finite['eval/success_rate']:.0%}"
        if "training/sps" in finite:
            shown["sps"] = f"{finite['training/sps']:,.0f}"
        self._bar.set_postfix(shown, refresh=True)

    def write(self, message: str) -> None:
        """A console line that does not break the progress bar."""
        self._bar.write(message)

    def close(self) -> Path | None:
        self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        return plot_learning_curve(self.run_dir)


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_learning_curve(run_dir: Path) -> Path | None:
    """Evaluation reward and success rate against env steps; None if nothing was evaluated."""
    rows = [r for r in read_metrics(run_dir) if "eval/episode_reward" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows.sort(key=lambda r: r["step"])
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, [r["eval/episode_reward"] for r in rows], "o-", color="tab:blue")
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval episode reward", color="tab:blue")
    if any("eval/success_rate" in r for r in rows):
        ax2 = ax.twinx()
        ax2.plot(
            steps,
            [r.get("eval/success_rate", float("nan")) for r in rows],
            "s--",
            color="tab:green",
        )
        ax2.set_ylabel("success rate", color="tab:green")
        ax2.set_ylim(-0.02, 1.02)
    ax.set_title(Path(run_dir).name)
    fig.tight_layout()
    path = Path(run_dir) / CURVE_FILE
    fig.savefig(path)
    plt.close(fig)
    return path
