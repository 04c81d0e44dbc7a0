"""The deployment safety layer: never outside the limits, never NaN, never over the rate limit
(the first step after a reset included), every intervention logged, and nothing it is given
makes it raise."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from playground.deploy.safety import SafetyLayer, SafetyLimits, finite_vector, real_scalar

LOWER = np.array([-2.9, -1.76, -2.9, -3.07, -2.9, -0.02, -2.9])
UPPER = np.array([2.9, 1.76, 2.9, -0.07, 2.9, 3.75, 2.9])
STEP = 0.05
LIMITS = SafetyLimits(lower=LOWER, upper=UPPER, max_step=STEP, watchdog_s=0.2)
TOL = LIMITS.future_tolerance_s


@pytest.fixture(autouse=True)
def quiet_safety_log():
    # Thousands of fuzzed interventions: logging them is the slow part of these tests.
    logger = logging.getLogger("playground.deploy.safety")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


class Weird:
    def __array__(self, *args, **kwargs):
        raise RuntimeError("no array here")


anything = st.floats(allow_nan=True, allow_infinity=True, width=64)
huge_ints = st.lists(st.integers(-(10**400), 10**400), min_size=7, max_size=7)
targets = st.one_of(
    hnp.arrays(np.float64, 7, elements=anything),
    hnp.arrays(np.float64, 7, elements=st.floats(-10, 10)),
    hnp.arrays(np.float64, st.integers(0, 9), elements=anything),
    hnp.arrays(np.float32, 7, elements=st.floats(width=32)),
    hnp.arrays(np.int64, 7),
    hnp.arrays(np.complex128, 7, elements=st.complex_numbers(max_magnitude=5)),
    hnp.arrays(np.float64, (1, 7), elements=st.floats(-3, 3)),
    st.lists(anything, max_size=9),
    huge_ints,
    st.lists(st.one_of(st.floats(-3, 3), st.text(max_size=2), st.none()), min_size=7, max_size=7),
    st.just(np.array([0.0] * 7, dtype=object)),
    st.just(np.zeros(7, dtype=bool)),
    st.just([[0.0] * 7, [0.0]]),  # ragged
    st.just(Weird()),
    st.none(),
    st.text(max_size=3),
    st.binary(max_size=3),
)
# Observation ages: fresh, stale, from the future within and beyond the tolerance, non-finite.
ages = st.one_of(
    st.floats(0.0, 1.0),
    st.floats(-3.0, 0.0),
    st.sampled_from([np.nan, np.inf, -np.inf, -1.7e9]),
)
stamps_garbage = st.sampled_from([None, "0.1", 1j, 10**400, True, [0.0], np.array([0.0])])


@settings(max_examples=300, deadline=None)
@given(
    start=hnp.arrays(np.float64, 7, elements=st.floats(-10, 10)),
    steps=st.lists(
        st.tuples(targets, st.one_of(ages, stamps_garbage.map(lambda g: ("stamp", g)))),
        max_size=20,
    ),
)
def test_output_is_always_within_limits_finite_and_rate_limited(start, steps):
    layer = SafetyLayer(LIMITS)
    first = layer.reset(start, now=0.0)
    startable = np.all(start >= LOWER - STEP) and np.all(start <= UPPER + STEP)
    assert first.ok == startable
    # The first target is limited from the measured position, even one beyond a limit.
    previous = start if startable else None
    now = 0.0
    for target, age in steps:
        now += 0.05
        if isinstance(age, tuple):
            observed, age = age[1], None
        else:
            observed = now - age
        out = layer.filter(target, now, observed)
        if previous is None:
            assert not out.ok and out.targets is None and out.refused == "unsafe_start"
            continue
        if out.ok:
            t = out.targets
            assert t.shape == (7,) and t.dtype == np.float64 and np.all(np.isfinite(t))
            assert np.all(t >= LOWER) and np.all(t <= UPPER)
            assert np.all(np.abs(t - previous) <= STEP + 1e-12)
            # Nothing but a fresh, honestly stamped observation gets through.
            assert age is not None and -TOL <= age <= LIMITS.watchdog_s
            a = np.asarray(target)
            assert a.dtype.kind in "iuf" and a.shape == (7,)
            previous = t
        else:
            assert out.refused in ("watchdog", "invalid")
            np.testing.assert_array_equal(out.targets, previous)


@settings(max_examples=200, deadline=None)
@given(st.one_of(targets, stamps_garbage, anything))
def test_input_checks_never_raise(value):
    vec, why = finite_vector(value, 7)
    assert (vec is None) == bool(why)
    if vec is not None:
        assert vec.shape == (7,) and vec.dtype == np.float64 and np.all(np.isfinite(vec))
    f = real_scalar(value)
    assert f is None or np.isfinite(f)


def test_first_target_after_reset_starts_from_the_measured_position():
    layer = SafetyLayer(LIMITS)
    measured = (LOWER + UPPER) / 2
    measured[0] = UPPER[0] + 0.03  # slightly beyond a limit: within one step of it
    assert layer.reset(measured, 0.0).ok
    out = layer.filter(np.full(7, -100.0), 0.05, 0.05)
    assert out.ok and np.all(out.targets >= LOWER) and np.all(out.targets <= UPPER)
    assert np.all(np.abs(out.targets - measured) <= STEP + 1e-12)
    # Farther beyond: no target within the limits is one step away, so nothing is sent.
    measured[0] = UPPER[0] + 0.5
    refused = layer.reset(measured, 0.1)
    assert refused.refused == "unsafe_start" and "beyond the target limits" in refused.detail
    assert layer.filter(measured, 0.15, 0.15).refused == "unsafe_start"
    # A usable position (the robot was moved back) starts it again.
    assert layer.rebase((LOWER + UPPER) / 2).ok
    assert layer.filter((LOWER + UPPER) / 2, 0.2, 0.2).ok


def test_watchdog_refuses_future_and_other_clock_stamps():
    layer = SafetyLayer(LIMITS)
    q = (LOWER + UPPER) / 2
    layer.reset(q, 0.0)
    assert layer.filter(q, 10.0, 10.0 + TOL / 2).ok  # clock jitter passes
    assert layer.filter(q, 10.0, 11.0).refused == "watchdog"  # 1 s in the future
    assert layer.filter(q, 10.0, 1.7e9).refused == "watchdog"  # epoch time against sim time
    assert layer.filter(q, 1.7e9, 10.0).refused == "watchdog"
    assert layer.filter(q, 10.0, 10.0 - 0.21).refused == "watchdog"  # stale
    assert layer.filter(q, 10.0, "10.0").refused == "watchdog"
    assert layer.filter(q, 10.0, 10.0 + 0j).refused == "watchdog"
    assert "future" in layer.interventions[1].detail


def test_complex_huge_and_odd_targets_are_refused_not_raised():
    layer = SafetyLayer(LIMITS)
    q = (LOWER + UPPER) / 2
    layer.reset(q, 0.0)
    for bad in (
        q + 0j,  # complex even with no imaginary part
        q.astype(np.complex64) + 1j,
        [10**400] * 7,  # OverflowError from numpy before
        np.array(q, dtype=object),
        np.zeros(7, dtype=bool),
        q[None],  # [1, 7]
        q[:6],
        "q",
        None,
        Weird(),
    ):
        out = layer.filter(bad, 0.05, 0.05)
        assert out.refused == "invalid", bad
        np.testing.assert_array_equal(out.targets, q)
    assert layer.filter(list(q), 0.05, 0.05).ok
    assert layer.filter([0, -1, 0, -1, 0, 1, 0], 0.05, 0.05).ok  # integers are real numbers


def test_each_intervention_is_logged(caplog):
    caplog.set_level(logging.WARNING, logger="playground.deploy.safety")
    layer = SafetyLayer(LIMITS)
    q = np.zeros(7)
    q[3] = -1.0
    layer.reset(q, now=0.0)
    ok = layer.filter(q + 0.01, 0.05, 0.05)
    assert ok.ok and np.array_equal(ok.targets, q + 0.01)  # fine: passes through
    assert layer.interventions == []
    nan = q.copy()
    nan[2] = np.nan
    held = layer.filter(nan, 0.10, 0.10)
    assert held.refused == "invalid" and np.array_equal(held.targets, q + 0.01)
    far = q.copy()
    far[0] = 5.0  # beyond the limit and far from the last target
    out = layer.filter(far, 0.15, 0.15).targets
    assert out[0] == pytest.approx(0.01 + 0.05)
    stale = layer.filter(q, 0.60, 0.15)  # observation 0.45 s old: stop
    assert stale.refused == "watchdog" and np.array_equal(stale.targets, out)
    assert layer.filter(np.zeros(3), 0.65, 0.65).refused == "invalid"
    assert layer.counts() == {"invalid": 2, "joint_limit": 1, "rate_limit": 1, "watchdog": 1}
    assert [i.step for i in layer.interventions] == [2, 3, 3, 4, 5]
    assert "watchdog" in caplog.text and "non-finite values at [2]" in caplog.text


def test_bad_limits_are_errors_and_use_before_reset_is_refused():
    with pytest.raises(ValueError, match="exceed"):
        SafetyLimits(lower=np.ones(2), upper=np.zeros(2), max_step=0.1)
    with pytest.raises(ValueError, match="max_step"):
        SafetyLimits(lower=np.zeros(2), upper=np.ones(2), max_step=0.0)
    with pytest.raises(ValueError, match="future_tolerance_s"):
        SafetyLimits(lower=np.zeros(2), upper=np.ones(2), max_step=0.1, future_tolerance_s=-1)
    before = SafetyLayer(LIMITS).filter(np.zeros(7), 0.0, 0.0)
    assert before.refused == "unsafe_start" and before.targets is None
    refused = SafetyLayer(LIMITS).reset(np.full(7, np.nan), 0.0)
    assert refused.refused == "unsafe_start" and "non-finite" in refused.detail
