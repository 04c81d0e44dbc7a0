"""The safety layer between a policy and a robot: what reaches the joints is always sane.

    safety = SafetyLayer(SafetyLimits(lower=q_lo, upper=q_hi, max_step=0.05, watchdog_s=0.2))
    safety.reset(measured_q)                             # where the joints are now
    result = safety.filter(policy_target, now, observation_time)  # every control step
    if result.ok: robot.send(result.targets)
    else: robot.hold()                                   # result.refused says why

Per control step, in this order:
1. Watchdog: the observation the target was computed from must be at most `watchdog_s` old and
   not stamped in the future (beyond `future_tolerance_s`): a future stamp means another clock
   or a broken one, and would hide a frozen sensor. Refused otherwise.
2. Invalid output: anything but a finite real vector of the right shape (NaN, inf, complex,
   strings, None, object arrays, integers too large for a float) is refused.
3. Joint limits: clamp each target into [lower, upper].
4. Rate limit: move each target at most `max_step` from the last safe target. The first target
   after `reset` is limited from the measured position given to `reset`, like every other.
A measured position more than `max_step` beyond the limits is refused at `reset` (no target
within the limits is then one step away); the layer refuses everything until a `reset` or
`rebase` with a position it can start from.

No method raises on any input: a refusal is a `SafetyResult` with `refused` set, whose `targets`
are the last safe target (None when there is none). Every intervention is logged (`logging`,
logger "playground.deploy.safety") and kept in `interventions` with its step, kind and detail.
Accepted targets are never non-finite, outside the limits or over the rate limit (tests fuzz this
with hypothesis).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from typing import Any

import numpy as np

LOG = logging.getLogger("playground.deploy.safety")


def finite_vector(value: Any, size: int) -> tuple[np.ndarray | None, str]:
    """(`value` as float64 `[size]`, "") when it is a finite real vector of that shape, else
    (None, why). Never raises."""
    if value is None or isinstance(value, (str, bytes)):
        return None, f"not numeric: {type(value).__name__}"
    try:
        # Casts of odd dtypes (float128 -> float64) warn; the finiteness check below decides.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            arr = np.asarray(value)
            # Python ints beyond int64 become an object array; bool and complex are not targets.
            if arr.dtype.kind not in "iuf":
                return None, f"not a real vector: dtype {arr.dtype}"
            if arr.shape != (size,):
                return None, f"shape {arr.shape}, expected ({size},)"
            vec = arr.astype(np.float64)
    except Exception as e:  # ragged lists, objects whose __array__ raises, ...
        return None, f"not numeric: {type(e).__name__}: {e}"
    if not np.all(np.isfinite(vec)):
        return None, f"non-finite values at {np.where(~np.isfinite(vec))[0]}"
    return vec, ""


def real_scalar(value: Any) -> float | None:
    """`value` as a finite float when it is a real number (not bool, not complex), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, np.ndarray):
        if value.ndim != 0 or value.dtype.kind not in "iuf":
            return None
        value = value[()]
    if not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    try:
        with np.errstate(all="ignore"):
            f = float(value)
    except (OverflowError, ValueError):
        return None
    return f if math.isfinite(f) else None


_ROUNDING = 1e-6  # relative; float32 carries about 7 digits


@dataclasses.dataclass(frozen=True)
class SafetyLimits:
    lower: np.ndarray  # per-joint lower target limit
    upper: np.ndarray  # per-joint upper target limit
    max_step: np.ndarray | float  # largest change of a target per control step
    watchdog_s: float = 0.25  # the robot stops when observations are older than this
    # Clock jitter allowed on a stamp from the future; anything beyond is another clock.
    future_tolerance_s: float = 0.005

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
        if not (np.isfinite(self.future_tolerance_s) and self.future_tolerance_s >= 0):
            raise ValueError(
                f"future_tolerance_s must be >= 0 and finite, got {self.future_tolerance_s}"
            )
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "max_step", np.array(step))


@dataclasses.dataclass(frozen=True)
class Intervention:
    step: int
    # "watchdog" | "invalid" | "joint_limit" | "rate_limit" | "unsafe_start"
    kind: str
    detail: str


@dataclasses.dataclass(frozen=True)
class SafetyResult:
    """What the layer allows: send `targets` when `refused` is None; otherwise hold the robot.
    On a refusal `targets` is the last safe target (None when there is none)."""

    targets: np.ndarray | None
    refused: str | None = None  # the intervention kind that refused
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.refused is None


class SafetyLayer:
    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self.interventions: list[Intervention] = []
        self._last: np.ndarray | None = None
        self._step = 0

    @property
    def size(self) -> int:
        return self.limits.lower.shape[0]

    def reset(self, measured: Any, now: float | None = None) -> SafetyResult:
        """Starts an episode from the measured positions (in target units): the first target is
        rate-limited from them. `now` is accepted for symmetry with `filter` and unused."""
        self._step = 0
        return self.rebase(measured)

    def rebase(self, measured: Any) -> SafetyResult:
        """The robot now holds `measured` (after `Robot.hold`): the next target is limited from
        there. Refused, and every target after it, when `measured` is not a finite vector or
        lies more than `max_step` beyond the limits."""
        q, why = finite_vector(measured, self.size)
        if q is None:
            return self._unsafe(f"measured position refused: {why}")
        lo = self.limits.lower - self.limits.max_step
        hi = self.limits.upper + self.limits.max_step
        out = (q < lo) | (q > hi)
        if np.any(out):
            return self._unsafe(
                f"measured position beyond the target limits by more than max_step at joints "
                f"{np.where(out)[0]}: move the robot into range before running a policy"
            )
        self._last = q
        return SafetyResult(q.copy())

    def stale(self, now: Any, observation_time: Any) -> str | None:
        """Why an observation stamped `observation_time` is refused at `now`, or None."""
        t_now, t_obs = real_scalar(now), real_scalar(observation_time)
        if t_now is None or t_obs is None:
            return f"timestamps {now!r} / {observation_time!r} are not finite real numbers"
        age = t_now - t_obs
        if not math.isfinite(age):
            return f"observation age {age} is not finite"
        if age > self.limits.watchdog_s:
            return f"observation is {age:.3f} s old (limit {self.limits.watchdog_s} s)"
        if age < -self.limits.future_tolerance_s:
            return f"observation is stamped {-age:.3g} s in the future (another clock?)"
        return None

    def filter(self, target: Any, now: Any, observation_time: Any) -> SafetyResult:
        """The target to send this control step, or a refusal (see the module doc)."""
        self._step += 1
        try:
            return self._filter(target, now, observation_time)
        except Exception as e:  # a bug here must hold the robot, not end the loop
            return self._refuse("invalid", f"safety layer error: {type(e).__name__}: {e}")

    def _filter(self, target: Any, now: Any, observation_time: Any) -> SafetyResult:
        if self._last is None:
            return self._refuse("unsafe_start", "no safe position to start from (reset first)")
        why = self.stale(now, observation_time)
        if why is not None:
            return self._refuse("watchdog", why)
        t, why = finite_vector(target, self.size)
        if t is None:
            return self._refuse("invalid", why)
        clamped = np.clip(t, self.limits.lower, self.limits.upper)
        # A float32 servo clipped to the limits lands within rounding of them: clamped quietly.
        beyond = np.abs(clamped - t) > _ROUNDING * np.maximum(1.0, np.abs(clamped))
        if np.any(beyond):
            self._log("joint_limit", f"joints {np.where(beyond)[0]} clamped")
        lo = self._last - self.limits.max_step
        hi = self._last + self.limits.max_step
        limited = np.clip(clamped, lo, hi)
        if np.any(limited != clamped):
            self._log("rate_limit", f"joints {np.where(limited != clamped)[0]} rate-limited")
        # Rounding in the rate limit must not push a target past a joint limit.
        self._last = np.clip(limited, self.limits.lower, self.limits.upper)
        return SafetyResult(self._last.copy())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.interventions:
            out[i.kind] = out.get(i.kind, 0) + 1
        return out

    def _unsafe(self, detail: str) -> SafetyResult:
        # Nothing is known to be safe to send until the robot reports a usable position.
        self._last = None
        return self._refuse("unsafe_start", detail)

    def _refuse(self, kind: str, detail: str) -> SafetyResult:
        self._log(kind, detail)
        return SafetyResult(None if self._last is None else self._last.copy(), kind, detail)

    def _log(self, kind: str, detail: str) -> None:
        self.interventions.append(Intervention(self._step, kind, detail))
        LOG.warning("safety step %d: %s: %s", self._step, kind, detail)
