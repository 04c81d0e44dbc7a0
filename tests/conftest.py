"""Shared fixtures: each env is built once per session with batched reset/step compiled once.

Compiling MJX steps takes tens of seconds on 2 CPU cores, so tests reuse these compiled
functions (batch `BATCH`) and drive them from Python loops instead of compiling new scans.
JAX's persistent compilation cache (set up by `import playground`) makes re-runs faster still.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import playground  # noqa: F401  (XLA flags + compilation cache before jax starts)
from playground import registry
from playground.envs.base import MjxEnv, State

BATCH = 4


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--slow", action="store_true", help="also run tests marked slow (left out by default)"
    )


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `slow` are deselected (not skipped) unless `--slow` is given."""
    if config.getoption("--slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@dataclasses.dataclass
class Compiled:
    env: MjxEnv
    reset: callable
    step: callable

    def reset_batch(self, seed: int = 0) -> State:
        return self.reset(jax.random.split(jax.random.PRNGKey(seed), BATCH))

    def zeros(self) -> jax.Array:
        return jnp.zeros((BATCH, self.env.action_size))

    def run(self, state: State, steps: int, action: jax.Array | None = None) -> State:
        action = self.zeros() if action is None else action
        for _ in range(steps):
            state = self.step(state, action)
        return state


def _compiled(name: str, **overrides) -> Compiled:
    env = registry.load(name, config_overrides=overrides or None)
    return Compiled(env, jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step)))


@pytest.fixture(scope="session")
def pick() -> Compiled:
    return _compiled("AlohaS2RPick")


@pytest.fixture(scope="session")
def peg() -> Compiled:
    return _compiled("AlohaS2RPegInsertion")


@pytest.fixture(scope="session")
def reach() -> Compiled:
    return _compiled("FrankaReach")


@pytest.fixture(scope="session")
def franka_grasp() -> Compiled:
    return _compiled("FrankaGrasp")


@pytest.fixture(scope="session")
def franka_lift() -> Compiled:
    return _compiled("FrankaLift")


@pytest.fixture(scope="session")
def distill() -> Compiled:
    return _compiled("AlohaS2RPegInsertionDistill")


@pytest.fixture(scope="session")
def reach_stereo() -> Compiled:
    return _compiled("FrankaReachStereo")


# Their physics, reward and stepping are FrankaGrasp's and FrankaLift's, and the camera mixin is
# the one FrankaReachStereo and the distillation task run; compiling two more Franka box steps
# would add about a minute of CI for no new code. tests/test_vision_envs.py checks their obs.
SHAPE_ONLY_ENVS = ("FrankaGraspStereo", "FrankaLiftStereo")
STEPPED_ENVS = tuple(n for n in registry.ALL_ENVS if n not in SHAPE_ONLY_ENVS)


@pytest.fixture(scope="session")
def compiled_envs(
    pick, peg, reach, franka_grasp, franka_lift, distill, reach_stereo
) -> dict[str, Compiled]:
    return {
        "AlohaS2RPick": pick,
        "AlohaS2RPegInsertion": peg,
        "FrankaReach": reach,
        "FrankaGrasp": franka_grasp,
        "FrankaLift": franka_lift,
        "AlohaS2RPegInsertionDistill": distill,
        "FrankaReachStereo": reach_stereo,
    }


@pytest.fixture(scope="session")
def render_model():
    """The primitive scene of the renderer tests (tests/render_scene.py)."""
    from .render_scene import scene_model

    return scene_model()


@pytest.fixture(scope="session")
def render_datas(render_model):
    from .render_scene import scene_datas

    return scene_datas(render_model)


def load_script(name: str):
    """Imports `scripts/<name>.py` as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses look their module up while the script loads.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def set_free_body(state: State, qpos_adr: int, pos, quat=(1.0, 0.0, 0.0, 0.0)) -> State:
    """Teleports a free body in every env of a batch and zeroes all velocities."""
    qpos = state.data.qpos.at[:, qpos_adr : qpos_adr + 3].set(jnp.asarray(pos))
    qpos = qpos.at[:, qpos_adr + 3 : qpos_adr + 7].set(jnp.asarray(quat))
    data = state.data.replace(qpos=qpos, qvel=jnp.zeros_like(state.data.qvel))
    return state.replace(data=data)


# Two epochs of 81,920 steps: FrankaReach's default hyperparameters, a shorter run.
REACH_FLAGS = [
    "--env_name",
    "FrankaReach",
    "--num_timesteps",
    "163840",
    "--num_evals",
    "3",
    "--noprogress",
]


@pytest.fixture(scope="session")
def reach_run(tmp_path_factory) -> tuple[Path, dict]:
    """A FrankaReach teacher trained by learning/train_jax_ppo.py once per session (~2 min):
    test_train_ppo checks the run, test_distill distils it."""
    from playground.training import teacher

    logdir = tmp_path_factory.mktemp("runs")
    summary = teacher.main([*REACH_FLAGS, "--logdir", str(logdir), "--num_videos", "1"])
    return Path(summary["run_dir"]), summary


# experimental/train_dagger.py on a tiny budget, distilling `reach_run`'s teacher: the run folder
# and resume (test_distill) and the student's ONNX export (test_onnx_export) use it.
TINY_FLAGS = [
    "--env-name",
    "FrankaReachStereo",
    "--env-config",
    "vision.width=32",
    "--env-config",
    "vision.height=32",
    "--iterations",
    "2",
    "--eval-every",
    "1",
    "--num-eval-envs",
    "4",
    "--num-envs",
    "4",
    "--unroll-length",
    "5",
    "--updates-per-iteration",
    "4",
    "--update-unroll",
    "2",
    "--batch-size",
    "16",
    "--num-videos",
    "1",
    "--no-progress",
    "--domain-randomization",
]
TINY_STEPS = 4 * 5  # envs x unroll per iteration


@pytest.fixture(scope="session")
def tiny_dagger_run(reach_run, tmp_path_factory) -> tuple[Path, dict]:
    from playground.training import distill

    _, teacher_summary = reach_run
    logdir = tmp_path_factory.mktemp("dagger")
    summary = distill.main(
        [*TINY_FLAGS, "--teacher", teacher_summary["policy"], "--logdir", str(logdir)]
    )
    return Path(summary["run_dir"]), summary


@pytest.fixture(scope="session")
def tiny_latent_run(reach_run, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny run with the latent student (frozen CIFAR convolutions, latents in the buffer)."""
    from playground.training import distill

    _, teacher_summary = reach_run
    logdir = tmp_path_factory.mktemp("dagger_latent")
    flags = [*TINY_FLAGS, "--student", "latent", "--features", "16", "--num-videos", "0"]
    summary = distill.main(
        [*flags, "--teacher", teacher_summary["policy"], "--logdir", str(logdir)]
    )
    return Path(summary["run_dir"]), summary


@pytest.fixture(scope="session")
def exported(reach_run, tiny_dagger_run, tmp_path_factory) -> dict:
    """kind -> (onnx path, source payload, observations recorded in the policy's own env): the
    reach teacher and the tiny student through aloha_nets_to_onnx.py (test_onnx_export and
    test_sim2sim use them)."""
    from playground.deploy import export_cli

    out = {}
    for kind, source in (
        ("teacher", reach_run[0] / "policy.safetensors"),
        ("student", tiny_dagger_run[0] / "student.safetensors"),
    ):
        out_dir = tmp_path_factory.mktemp(kind)
        (result,) = export_cli.main(
            ["--checkpoint_path", str(source), "--output_dir", str(out_dir)]
        )
        payload = export_cli.load_payload(kind, source)
        env = export_cli.env_of(payload)
        # The exporter's own recording shape (4 envs x 16 steps) on another seed: fresh
        # observations, and the compiled rollout comes from the compilation cache.
        observations = export_cli.record_observations(env, payload, 4, 16, seed=7)
        out[kind] = (result["onnx"], payload, observations)
    return out


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle of the rotation taking orientation `a` to `b` (3x3 matrices), in degrees."""
    cos = np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.rad2deg(np.arccos(cos)))


def random_policy_file(path, env_name: str, seed: int = 0) -> Path:
    """A policy file in the teacher format for `env_name`, with untrained (random) weights."""
    from brax.training.acme import running_statistics, specs
    from brax.training.agents.ppo import networks as ppo_networks

    from playground.files import policy_file

    env = registry.load(env_name)
    obs_size = env.observation_size
    nets = ppo_networks.make_ppo_networks(
        obs_size,
        env.action_size,
        preprocess_observations_fn=running_statistics.normalize,
        policy_hidden_layer_sizes=(16, 16),
        value_hidden_layer_sizes=(16,),
        policy_obs_key="state",
        value_obs_key="privileged_state",
    )
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    normalizer = running_statistics.init_state(
        {k: specs.Array(v, jnp.float32) for k, v in obs_size.items()}
    )
    params = (normalizer, nets.policy_network.init(k1), nets.value_network.init(k2))
    return policy_file.save_policy(
        path,
        env_name=env_name,
        params=params,
        observation_size=obs_size,
        action_size=env.action_size,
        policy_hidden_layer_sizes=(16, 16),
        value_hidden_layer_sizes=(16,),
    )
