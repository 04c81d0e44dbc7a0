"""The safety layer between a policy and a robot: what reaches the joints is always sane.

    safety = SafetyLayer(SafetyLimits(lower=q_lo, upper=q_hi, max_step=0.05, watchdog_s=0.2))
    safety.reset(measured_q, now)
    target = safety.filter(policy_target, now, observation_time)  # every control step

Per control step, in this order:
1. Watchdog: if no fresh observation arrived within `watchdog_s`, the robot stops: it holds the
   last safe target and the policy's output is ignored until observations return.
2. Invalid output (wrong shape, NaN or infinite values): hold the last safe target.
3. Joint limits: clamp each target into [lower, upper].
4. Rate limit: move each target at most `max_step` from the last safe target.
Every intervention is logged (`logging`, logger "playground.deploy.safety") and kept in
`interventions` with its step, kind and detail, so a run can report what the layer did.
The output is never NaN and never outside the limits (tests fuzz this with hypothesis).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

LOG = logging.getLogger("playground.deploy.safety")


@dataclasses.dataclass(frozen=True)
class SafetyLimits:
    lower: np.ndarray  # per-joint lower target limit
    upper: np.ndarray  # per-joint upper target limit
    max_step: np.ndarray | float  # largest change of a target per control step
    watchdog_s: float = 0.25  # the robot stops when observations are older than this

    def __post_init__(self) -> None:
        lower = np.asarray(self.lower, np.float64)
        upper = np.asarray(self.upper, np.float64)
        step = np.broadcast_to(np.asarray(self.max_step, np.float64), lower.shape)
        if lower.ndim != 1 or lower.shape != upper.shape:
            raise ValueError(
                f"lower {lower.shape} and upper {upper.shape} must be equal 1-D shapes"
            )
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
            raise ValueError("joint limits must be finite")
        if np.any(lower > upper):
            raise ValueError(
                f"lower limits exceed upper limits at joints {np.where(lower > upper)[0]}"
            )
        if not (np.all(np.isfinite(step)) and np.all(step > 0)):
            raise ValueError(f"max_step must be positive and finite, got {self.max_step}")
        if not (np.isfinite(self.watchdog_s) and self.watchdog_s > 0):
            raise ValueError(f"watchdog_s must be positive, got {self.watchdog_s}")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "max_step", np.array(step))


@dataclasses.dataclass(frozen=True)
class Intervention:
    step: int
    kind: str  # "watchdog" | "invalid" | "joint_limit" | "rate_limit"
    detail: str


class SafetyLayer:
    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self.interventions: list[Intervention] = []
        self._last: np.ndarray | None = None
        self._step = 0

    @property
    def size(self) -> int:
        return self.limits.lower.shape[0]

    def reset(self, measured: Any, now: float) -> np.ndarray:
        """Starts from the measured joint positions (clamped into the limits); returns them."""
        q = np.asarray(measured, np.float64).reshape(-1)
        if q.shape != (self.size,) or not np.all(np.isfinite(q)):
            raise ValueError(
                f"reset needs {self.size} finite joint positions, got shape {q.shape}: {q}"
            )
        self._last = np.clip(q, self.limits.lower, self.limits.upper)
        self._step = 0
        return self._last.copy()

    def filter(self, target: Any, now: float, observation_time: float) -> np.ndarray:
        """The target to send this control step (see the module doc)."""
        if self._last is None:
            raise RuntimeError("SafetyLayer.filter before reset: call reset(measured, now) first.")
        self._step += 1
        age = now - observation_time
        if not np.isfinite(age) or age > self.limits.watchdog_s:
            self._log(
                "watchdog", f"observation is {age:.3f} s old (limit {self.limits.watchdog_s} s)"
            )
            return self._last.copy()
        try:
            t = np.asarray(target, np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            self._log("invalid", f"not numeric: {e}")
            return self._last.copy()
        if t.shape != (self.size,):
            self._log("invalid", f"shape {t.shape}, expected ({self.size},)")
            return self._last.copy()
        if not np.all(np.isfinite(t)):
            self._log("invalid", f"non-finite values at joints {np.where(~np.isfinite(t))[0]}")
            return self._last.copy()
        clamped = np.clip(t, self.limits.lower, self.limits.upper)
        if np.any(clamped != t):
            self._log("joint_limit", f"joints {np.where(clamped != t)[0]} clamped")
        lo = self._last - self.limits.max_step
        hi = self._last + self.limits.max_step
        limited = np.clip(clamped, lo, hi)
        if np.any(limited != clamped):
            self._log("rate_limit", f"joints {np.where(limited != clamped)[0]} rate-limited")
        # Rounding in the rate limit must not push a target past a joint limit.
        self._last = np.clip(limited, self.limits.lower, self.limits.upper)
        return self._last.copy()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.interventions:
            out[i.kind] = out.get(i.kind, 0) + 1
        return out

    def _log(self, kind: str, detail: str) -> None:
        self.interventions.append(Intervention(self._step, kind, detail))
        LOG.warning("safety step %d: %s: %s", self._step, kind, detail)
