"""The robot loop's fault path (playground/deploy/runner.py), fuzzed with a tiny fake robot,
servo and policy (no JAX): whatever the robot, the servo or the policy does, no command is sent
outside the joint limits, over the rate limit (the first included), non-finite, or acting on a
reading the watchdog should have refused; faults hold the robot, repeated faults stop it, and
`run_episode` never raises. ONNX outputs are checked on tiny crafted models."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper

from playground.deploy import runner
from playground.deploy.obs_builder import check_reading
from playground.deploy.onnx_policy import OnnxPolicy, OnnxPolicyError
from playground.deploy.robot import Reading, Robot
from playground.deploy.safety import SafetyLayer, SafetyLimits

NU = 3
NAMES = ("a", "b", "c")
LOWER = np.array([-1.0, -2.0, -0.5])
UPPER = np.array([1.0, 2.0, 0.5])
MAX_STEP = 0.1
WATCHDOG = 0.2
PERIOD = 0.05
LIMITS = SafetyLimits(lower=LOWER, upper=UPPER, max_step=MAX_STEP, watchdog_s=WATCHDOG)
TOL = LIMITS.future_tolerance_s
EPS = 1e-9


@pytest.fixture(autouse=True)
def quiet_logs():
    # Thousands of fuzzed faults: logging them is the slow part of these tests.
    loggers = [logging.getLogger(f"playground.deploy.{n}") for n in ("safety", "runner")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    yield
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


class Clock:
    """The runner's wall clock, advanced by hand: stalls cost no real time."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += max(0.0, dt)


def script(items):
    items = list(items)
    while True:
        yield items.pop(0) if items else "ok"


class FakeRobot(Robot):
    """Follows its commands exactly (a hold may find it drifted); records every rule a command
    breaks instead of raising, since the runner would count a raise as a send fault."""

    def __init__(self, clock, q0, simulated=False, reads=(), sends=(), holds=(), held=None):
        self.clock, self.simulated_time = clock, simulated
        self.q = np.array(q0, float)  # where the joints are
        self.commanded = self.q.copy() if held is None else np.array(held, float)
        self.sim_t = 0.0
        self._reads, self._sends, self._holds = script(reads), script(sends), script(holds)
        self.violations: list[str] = []
        self.sent: list[np.ndarray] = []
        self.holds = 0
        self.stop_calls = 0
        self.stop_raises = False
        self.now_nan = False
        self.last = None  # the latest reading returned: (valid, robot-side age, wall time)

    joint_names = property(lambda self: NAMES)
    target_limits = property(lambda self: (LOWER.copy(), UPPER.copy()))
    held_targets = property(lambda self: self.commanded.copy())

    def now_s(self) -> float:
        return float("nan") if self.now_nan else self.sim_t

    def _clock(self) -> float:
        return self.sim_t if self.simulated_time else self.clock()

    def read(self):
        b = next(self._reads)
        self.last, self.now_nan = None, False
        qpos, stamp = self.q.copy(), self._clock()
        kind, arg = b if isinstance(b, tuple) else (b, 0.0)
        if kind == "raise":
            raise ConnectionError("link down")
        if kind == "stall":  # measured, then delivered late
            self.clock.advance(arg)
        elif kind == "stale":
            stamp -= arg
        elif kind == "future":
            stamp += arg
        elif kind == "other_clock":
            stamp = 1.7e9
        elif kind == "now_nan":
            self.now_nan = True
        elif kind in ("nan", "inf"):
            qpos[1] = float(kind)
        elif kind == "short":
            qpos = qpos[:2]
        elif kind == "complex":
            qpos = qpos + 1j
        elif kind == "none":
            return None
        elif kind.startswith("stamp_"):
            stamp = {"stamp_nan": np.nan, "stamp_str": "now", "stamp_none": None}.get(kind, 10**400)
        valid = (
            kind not in ("nan", "inf", "short", "complex", "other_clock")
            and not kind.startswith("stamp_")
            and not (kind == "now_nan" and self.simulated_time)  # only a simulation's clock
        )
        age = (self.sim_t if self.simulated_time else self.clock()) - (stamp if valid else 0.0)
        self.last = (valid, age, self.clock())
        return Reading(time_s=stamp, qpos=qpos, qvel=np.zeros(len(qpos)))

    def send(self, targets):
        b = next(self._sends)
        t = np.asarray(targets)
        bad = self.violations.append
        if self.stop_calls:
            bad("send after stop")
        if t.shape != (NU,) or t.dtype.kind != "f" or not np.all(np.isfinite(t)):
            bad(f"not a finite float vector: {t!r}")
            return
        if np.any(t < LOWER) or np.any(t > UPPER):
            bad(f"outside the limits: {t}")
        if np.any(np.abs(t - self.commanded) > MAX_STEP + EPS):
            bad(f"over the rate limit: {t} after {self.commanded}")
        if self.last is None or not self.last[0]:
            bad("acting on an unusable reading")
        else:
            _, age, at = self.last
            # Robot-side age plus the wall time the runner held the reading.
            age = age + self.clock() - at if self.simulated_time else self.clock() - (at - age)
            if not -TOL - EPS <= age <= WATCHDOG + EPS:
                bad(f"acting on a reading {age:.3f} s old")
        kind, arg = b if isinstance(b, tuple) else (b, 0.0)
        if kind == "raise":
            raise ConnectionError("send failed")
        self.sent.append(t.copy())
        self.commanded = t.copy()
        self.q = t.copy()
        self.sim_t += PERIOD
        self.clock.advance(PERIOD + arg)

    def hold(self):
        self.holds += 1
        b = next(self._holds)
        kind, arg = b if isinstance(b, tuple) else (b, 0.0)
        if kind == "raise":
            raise ConnectionError("hold failed")
        if kind == "drift":  # the joints sagged away from their last target
            self.q = self.q + arg
        self.commanded = self.q.copy()
        if kind == "nan":
            return np.full(NU, np.nan)
        return self.q.copy()

    def stop(self):
        self.stop_calls += 1
        if self.stop_raises:
            raise ConnectionError("stop failed")

    def close(self):
        pass


class FakeBuilder:
    """The observation builder and servo: observation = joints, targets = base + 0.3 * action.
    Its memory (the sum of actions) must stay finite."""

    env = SimpleNamespace(action_size=NU, ctrl_dt=PERIOD)

    def __init__(self, servo=()):
        self._servo = script(servo)
        self.base = self.memory = self.pending = None
        self.violations: list[str] = []

    def start(self, reading, task, targets):
        check_reading(reading, NAMES)
        self.base, self.memory = np.asarray(targets, float), np.zeros(NU)

    def observe(self, reading):
        q, v = check_reading(reading, NAMES)
        return {"state": np.concatenate([q, v])}

    def command(self, action):
        a = np.asarray(action)
        if a.shape != (NU,) or a.dtype.kind != "f" or not np.all(np.isfinite(a)):
            self.violations.append(f"servo got {action!r}")
        b = next(self._servo)
        with np.errstate(over="ignore"):
            ctrl, memory = self.base + 0.3 * a, self.memory + a
        if b == "raise" or not np.all(np.isfinite(memory)):  # as ObservationBuilder refuses
            raise RuntimeError("IK diverged")
        self.pending = memory
        return {
            "ok": ctrl,
            "nan": np.full(NU, np.nan),
            "inf": np.full(NU, -np.inf),
            "short": ctrl[:2],
            "complex": ctrl + 0j,
            "none": None,
            "huge": np.full(NU, 1e300),
            "huge_int": [10**400] * NU,
        }[b]

    def sent(self, targets):
        self.base, self.memory, self.pending = np.asarray(targets), self.pending, None

    def held(self, targets):
        self.base, self.pending = np.asarray(targets), None


class FakePolicy:
    inputs = {"state": ((6,), np.float32)}

    def __init__(self, clock, outputs=(), wave=False):
        self.clock, self._outputs, self.wave, self.calls = clock, script(outputs), wave, 0

    def __call__(self, obs):
        b = next(self._outputs)
        self.calls += 1
        kind, arg = b if isinstance(b, tuple) else (b, None)
        if kind == "ok" and arg is None and self.wave:  # back and forth, faster than allowed
            return 0.6 * np.sin(self.calls + np.arange(NU))
        if kind == "ok":
            return np.full(NU, 0.2) if arg is None else arg
        if kind == "stall":
            self.clock.advance(arg)
            return np.zeros(NU)
        if kind == "raise":
            raise RuntimeError("onnxruntime failed")
        if kind == "interrupt":
            raise KeyboardInterrupt
        return {
            "nan": np.array([0.1, np.nan, 0.0]),
            "inf": np.array([np.inf, 0.0, 0.0]),
            "huge": np.full(NU, 1e308),
            "huge_int": [10**400] * NU,
            "complex": np.zeros(NU) + 1j,
            "short": np.zeros(NU - 1),
            "batched": np.zeros((1, NU)),
            "none": None,
            "str": "left",
            "object": np.array([0.1, None, 0.2], dtype=object),
            "bool": np.ones(NU, bool),
            "float128": np.full(NU, 1e4000, np.longdouble),
        }[kind]


def run(robot, builder, policy, clock, steps=20, max_faults=3):
    return runner.run_episode(
        robot,
        builder,
        policy,
        SafetyLayer(LIMITS),
        {},
        steps,
        max_faults=max_faults,
        clock=clock,
        sleep=clock.advance,
    )


def ok(times=1):
    return ["ok"] * times


seconds = st.floats(0.0, 0.6)
read_faults = st.one_of(
    st.sampled_from(
        [
            "raise",
            "nan",
            "inf",
            "short",
            "complex",
            "none",
            "other_clock",
            "now_nan",
            "stamp_nan",
            "stamp_str",
            "stamp_none",
            "stamp_huge",
        ]
    ),
    st.tuples(st.sampled_from(["stale", "future", "stall"]), seconds),
    st.tuples(st.just("future"), st.floats(0.0, 2 * TOL)),
)
policy_faults = st.one_of(
    st.sampled_from(
        [
            "raise",
            "nan",
            "inf",
            "huge",
            "huge_int",
            "complex",
            "short",
            "batched",
            "none",
            "str",
            "object",
            "bool",
            "float128",
        ]
    ),
    st.tuples(st.just("stall"), seconds),
    st.tuples(st.just("ok"), hnp.arrays(np.float64, NU, elements=st.floats(-5, 5))),
)
servo_faults = st.sampled_from(
    ["raise", "nan", "inf", "short", "complex", "none", "huge", "huge_int"]
)
send_faults = st.one_of(st.just("raise"), st.tuples(st.just("stall"), seconds))
drift = hnp.arrays(np.float64, NU, elements=st.floats(-0.05, 0.05))
hold_faults = st.one_of(st.sampled_from(["raise", "nan"]), st.tuples(st.just("drift"), drift))


def mostly_ok(faults):
    # A few faults among good calls, at drawn places (neighbouring ones make runs of faults).
    return st.dictionaries(st.integers(0, 35), faults, max_size=6).map(
        lambda at: [at.get(i, "ok") for i in range(36)]
    )


# Joint positions as fractions of each joint's range: mostly inside, sometimes beyond.
fractions = st.one_of(
    hnp.arrays(np.float64, NU, elements=st.floats(0.0, 1.0)),
    hnp.arrays(np.float64, NU, elements=st.floats(-0.2, 1.2)),
)


@settings(max_examples=250, deadline=None)
@given(
    q0=fractions.map(lambda u: LOWER + u * (UPPER - LOWER)),
    simulated=st.booleans(),
    reads=mostly_ok(read_faults),
    outputs=mostly_ok(policy_faults),
    servo=mostly_ok(servo_faults),
    sends=mostly_ok(send_faults),
    holds=mostly_ok(hold_faults),
    max_faults=st.integers(1, 4),
    stop_raises=st.booleans(),
)
def test_no_fault_reaches_the_joints_and_the_loop_never_dies(
    q0, simulated, reads, outputs, servo, sends, holds, max_faults, stop_raises
):
    clock = Clock()
    robot = FakeRobot(clock, q0, simulated, reads, sends, holds)
    robot.stop_raises = stop_raises
    builder = FakeBuilder(servo)
    policy = FakePolicy(clock, outputs, wave=True)
    log = run(robot, builder, policy, clock, steps=25, max_faults=max_faults)

    assert robot.violations == [] and builder.violations == []
    assert builder.memory is None or np.all(np.isfinite(builder.memory))
    assert robot.stop_calls == int(log.stopped)
    assert log.stopped or log.steps == 25
    assert log.sent == len(robot.sent)
    assert sum(log.faults.values()) == len(log.fault_log)
    assert set(log.faults) <= set(runner.FAULT_KINDS)
    if np.any(q0 < LOWER - MAX_STEP - 0.05) or np.any(q0 > UPPER + MAX_STEP + 0.05):
        # Too far beyond the limits to start from (drift included): nothing is ever sent.
        assert robot.sent == [] and log.stopped


def test_faults_hold_and_consecutive_faults_stop_the_robot():
    clock = Clock()
    robot = FakeRobot(clock, np.zeros(NU))
    # Two faults, a good step (resets the count), two faults, a good step, then three.
    outputs = ["raise", "nan", "ok", "raise", "none", "ok", "raise", "raise", "raise"]
    log = run(robot, FakeBuilder(), FakePolicy(clock, outputs), clock, steps=20)
    assert log.stopped and robot.stop_calls == 1
    assert log.steps == 9 and log.sent == 2 and len(robot.sent) == 2
    assert log.faults == {"policy": 7}
    assert robot.holds == 1 + 7  # at the start, then once per fault
    assert "3 consecutive faults" in log.stop_reason
    assert robot.violations == []


def test_max_faults_is_configurable():
    clock = Clock()
    outputs = ["raise"] * 4 + ok(16)
    log = run(FakeRobot(clock, np.zeros(NU)), FakeBuilder(), FakePolicy(clock, outputs), clock)
    assert log.stopped and log.steps == 3
    clock = Clock()
    robot = FakeRobot(clock, np.zeros(NU))
    log = run(robot, FakeBuilder(), FakePolicy(clock, outputs), clock, max_faults=5)
    assert not log.stopped and log.steps == 20 and log.sent == 16
    with pytest.raises(ValueError, match="max_faults"):
        run(robot, FakeBuilder(), FakePolicy(clock), clock, max_faults=0)


def test_a_faulted_step_lasts_a_control_period():
    """Without pacing, three faults would take microseconds: 3 faults stop at 150 ms."""
    clock = Clock()
    t0 = clock()
    log = run(
        FakeRobot(clock, np.zeros(NU)), FakeBuilder(), FakePolicy(clock, ["raise"] * 3), clock
    )
    assert log.stopped
    assert clock() - t0 == pytest.approx(2 * PERIOD)  # the third fault stops at once


@pytest.mark.parametrize(
    "where, fault, kind",
    [
        ("reads", "raise", "read"),
        ("reads", "nan", "reading"),
        ("reads", "complex", "reading"),
        ("reads", "none", "reading"),
        ("reads", ("stale", 0.3), "watchdog"),
        ("reads", ("future", 1.0), "watchdog"),
        ("reads", "other_clock", "watchdog"),
        ("reads", "stamp_huge", "watchdog"),
        ("outputs", "nan", "policy"),
        ("outputs", "huge_int", "policy"),
        ("outputs", "complex", "policy"),
        ("outputs", ("stall", 0.3), "watchdog"),
        ("servo", "raise", "servo"),
        ("servo", "nan", "safety"),
        ("servo", "huge_int", "safety"),
        ("sends", "raise", "send"),
    ],
)
def test_each_fault_is_held_counted_and_survived(where, fault, kind):
    """One fault at step 3: counted under its kind, the robot held, and the next steps send."""
    clock = Clock()
    scripts = {"reads": [], "outputs": [], "servo": [], "sends": []}
    # The start reads once; the servo and send are not reached on the first two steps' faults.
    scripts[where] = ok(3 if where == "reads" else 2) + [fault]
    robot = FakeRobot(clock, np.zeros(NU), reads=scripts["reads"], sends=scripts["sends"])
    policy = FakePolicy(clock, scripts["outputs"])
    log = run(robot, FakeBuilder(scripts["servo"]), policy, clock, steps=8)
    assert log.faults == {kind: 1}, log.fault_log
    assert log.fault_log[0].step == 3
    assert not log.stopped and log.steps == 8 and log.sent == 7
    assert robot.holds == 2 and robot.violations == []


@pytest.mark.parametrize("simulated", [False, True])
def test_watchdog_catches_a_stalled_policy_on_the_wall_clock(simulated):
    """A simulated robot's clock does not move while the policy runs: the wall clock must."""
    clock = Clock()
    robot = FakeRobot(clock, np.zeros(NU), simulated=simulated)
    policy = FakePolicy(clock, ok(2) + [("stall", WATCHDOG + 0.01), ("stall", WATCHDOG - 0.02)])
    log = run(robot, FakeBuilder(), policy, clock, steps=6)
    assert log.faults == {"watchdog": 1} and log.sent == 5
    assert "old" in log.fault_log[0].detail
    assert robot.violations == []


def test_first_command_starts_from_the_measured_position():
    """The robot holds a target beyond the upper limit; its joints stopped short of it. The
    first command moves at most one step from where the joints are."""
    clock = Clock()
    measured = np.array([0.95, 0.0, 0.0])
    robot = FakeRobot(clock, measured, held=[1.5, 0.0, 0.0])
    policy = FakePolicy(clock, [("ok", np.array([-5.0, 5.0, 5.0]))])
    log = run(robot, FakeBuilder(), policy, clock, steps=1)
    assert log.sent == 1 and robot.violations == []
    assert np.all(np.abs(robot.sent[0] - measured) <= MAX_STEP + EPS)


def test_a_robot_too_far_beyond_its_limits_is_never_commanded():
    clock = Clock()
    robot = FakeRobot(clock, np.array([1.5, 0.0, 0.0]))
    log = run(robot, FakeBuilder(), FakePolicy(clock), clock)
    assert robot.sent == [] and log.stopped and log.steps == 0
    assert log.faults == {"start": 3} and "beyond the target limits" in log.fault_log[0].detail


def test_a_nan_action_never_enters_the_servo_memory():
    clock = Clock()
    builder = FakeBuilder()
    outputs = ok(2) + ["nan", "inf"] + ok(4)
    log = run(FakeRobot(clock, np.zeros(NU)), builder, FakePolicy(clock, outputs), clock, steps=8)
    assert log.sent == 6 and not log.stopped and builder.violations == []
    np.testing.assert_allclose(builder.memory, np.full(NU, 0.2 * 6))


def test_a_failing_hold_or_stop_is_counted_and_the_loop_still_returns():
    clock = Clock()
    robot = FakeRobot(clock, np.zeros(NU), holds=ok(1) + ["raise", "nan", "raise"])
    robot.stop_raises = True
    log = run(robot, FakeBuilder(), FakePolicy(clock, ["raise"] * 3), clock)
    assert log.stopped and log.faults == {"policy": 3, "hold": 3, "stop": 1}


def test_ctrl_c_holds_and_stops_the_robot_then_propagates():
    clock = Clock()
    robot = FakeRobot(clock, np.zeros(NU))
    with pytest.raises(KeyboardInterrupt):
        run(robot, FakeBuilder(), FakePolicy(clock, ok(2) + ["interrupt"]), clock)
    assert robot.stop_calls == 1 and robot.holds == 2 and len(robot.sent) == 2


# ----- ONNX outputs -----


def tiny_onnx(path, bias, *, inputs=4, declared=None, cast=None, metadata=None):
    """An ONNX policy state [N, inputs] -> state @ 1 + bias [N, len(bias)], output declared
    [N, declared] (default len(bias)); `cast` converts the output, `metadata` is written as the
    exporter writes it."""
    n = len(bias)
    w = helper.make_tensor("w", TensorProto.FLOAT, (inputs, n), [1.0] * inputs * n)
    b = helper.make_tensor("b", TensorProto.FLOAT, (n,), bias)
    nodes = [helper.make_node("MatMul", ["state", "w"], ["mm"])]
    nodes.append(helper.make_node("Add", ["mm", "b"], ["sum" if cast else "action"]))
    out_type = TensorProto.FLOAT
    if cast:
        nodes.append(helper.make_node("Cast", ["sum"], ["action"], to=cast))
        out_type = cast
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["N", inputs])],
        [helper.make_tensor_value_info("action", out_type, ["N", declared or n])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, path)
    return path


def test_onnx_outputs_are_checked(tmp_path):
    state = np.zeros(4, np.float32)
    good = OnnxPolicy(tiny_onnx(tmp_path / "good.onnx", [0.1, 0.2, 0.3]))
    np.testing.assert_allclose(good({"state": state}), [0.1, 0.2, 0.3], rtol=1e-6)
    assert good({"state": np.zeros((5, 4), np.float32)}).shape == (5, NU)
    for name, bias in (("nan", [0.0, np.nan, 0.0]), ("inf", [np.inf, 0.0, 0.0])):
        policy = OnnxPolicy(tiny_onnx(tmp_path / f"{name}.onnx", bias))
        with pytest.raises(OnnxPolicyError, match="non-finite"):
            policy({"state": state})
    # Whatever the session runs is checked against the shape it declares.
    for bad, match in (
        (np.zeros((1, 2), np.float32), "shape"),
        (np.zeros((2, NU), np.float32), "shape"),  # batch of 2 for 1 input
        (np.zeros(NU, np.float32), "shape"),
        (np.zeros((1, NU), np.int64), "dtype"),
        (np.full((1, NU), np.nan, np.float32), "non-finite"),
    ):
        with pytest.raises(OnnxPolicyError, match=match):
            good.check_output(bad, 1)
    # A graph computing 2 actions where it declares 3: onnxruntime reports the 2, and the
    # runner refuses them as a policy fault (check_policy refuses the file up front).
    short = OnnxPolicy(tiny_onnx(tmp_path / "short.onnx", [0.0, 0.0], declared=NU))
    assert short.action_size == 2 and short({"state": state}).shape == (2,)
    with pytest.raises(OnnxPolicyError, match="type tensor\\(int64\\)"):
        OnnxPolicy(tiny_onnx(tmp_path / "int.onnx", [0.0] * NU, cast=TensorProto.INT64))


def test_a_nan_onnx_policy_is_a_policy_fault(tmp_path):
    clock = Clock()
    policy = OnnxPolicy(tiny_onnx(tmp_path / "nan.onnx", [0.0, np.nan, 0.0]))

    class FourJoints(FakeBuilder):
        def observe(self, reading):
            return {"state": np.zeros(4, np.float32)}

    robot = FakeRobot(clock, np.zeros(NU))
    log = run(robot, FourJoints(), policy, clock)
    assert log.stopped and log.faults == {"policy": 3} and robot.sent == []
    assert "non-finite" in log.fault_log[0].detail
