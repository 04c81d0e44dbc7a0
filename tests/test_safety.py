"""The deployment safety layer: never outside the limits, never NaN, every intervention logged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from playground.deploy.safety import SafetyLayer, SafetyLimits

LOWER = np.array([-2.9, -1.76, -2.9, -3.07, -2.9, -0.02, -2.9])
UPPER = np.array([2.9, 1.76, 2.9, -0.07, 2.9, 3.75, 2.9])
LIMITS = SafetyLimits(lower=LOWER, upper=UPPER, max_step=0.05, watchdog_s=0.2)

anything = st.floats(allow_nan=True, allow_infinity=True, width=64)
targets = st.one_of(
    hnp.arrays(np.float64, 7, elements=anything),
    hnp.arrays(np.float64, st.integers(0, 9), elements=anything),
    st.lists(anything, max_size=9),
    st.none(),
    st.text(max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    start=hnp.arrays(np.float64, 7, elements=st.floats(-10, 10)),
    steps=st.lists(
        st.tuples(targets, st.one_of(st.floats(0.0, 1.0), st.just(np.nan))), max_size=20
    ),
)
def test_output_is_always_within_limits_finite_and_rate_limited(start, steps):
    layer = SafetyLayer(LIMITS)
    previous = layer.reset(start, now=0.0)
    assert np.all(previous >= LOWER) and np.all(previous <= UPPER)
    now = 0.0
    for target, age in steps:
        now += 0.05
        out = layer.filter(target, now, now - age)
        assert out.shape == (7,) and np.all(np.isfinite(out))
        assert np.all(out >= LOWER) and np.all(out <= UPPER)
        assert np.all(np.abs(out - previous) <= 0.05 + 1e-12)
        previous = out


def test_each_intervention_is_logged(caplog):
    layer = SafetyLayer(LIMITS)
    q = np.zeros(7)
    q[3] = -1.0
    layer.reset(q, now=0.0)
    assert np.array_equal(layer.filter(q + 0.01, 0.05, 0.05), q + 0.01)  # fine: passes through
    assert layer.interventions == []
    nan = q.copy()
    nan[2] = np.nan
    held = layer.filter(nan, 0.10, 0.10)
    assert np.array_equal(held, q + 0.01)
    far = q.copy()
    far[0] = 5.0  # beyond the limit and far from the last target
    out = layer.filter(far, 0.15, 0.15)
    assert out[0] == pytest.approx(0.01 + 0.05)
    stale = layer.filter(q, 0.60, 0.15)  # observation 0.45 s old: stop
    assert np.array_equal(stale, out)
    assert layer.filter(np.zeros(3), 0.65, 0.65) is not None
    assert layer.counts() == {"invalid": 2, "joint_limit": 1, "rate_limit": 1, "watchdog": 1}
    assert [i.step for i in layer.interventions] == [2, 3, 3, 4, 5]
    assert "watchdog" in caplog.text and "non-finite values at joints [2]" in caplog.text


def test_bad_limits_and_use_before_reset_are_errors():
    with pytest.raises(ValueError, match="exceed"):
        SafetyLimits(lower=np.ones(2), upper=np.zeros(2), max_step=0.1)
    with pytest.raises(ValueError, match="max_step"):
        SafetyLimits(lower=np.zeros(2), upper=np.ones(2), max_step=0.0)
    with pytest.raises(RuntimeError, match="before reset"):
        SafetyLayer(LIMITS).filter(np.zeros(7), 0.0, 0.0)
    with pytest.raises(ValueError, match="7 finite joint positions"):
        SafetyLayer(LIMITS).reset(np.full(7, np.nan), 0.0)
