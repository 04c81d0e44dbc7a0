"""Rendering benchmark: images/s per backend, resolution and batch size, on the current device.

    python scripts/bench_render.py                                  # 32 and 64 px, N = 1 64 256
    python scripts/bench_render.py --res 32 --batch 256 --repeats 7

The scene is a task's (default: AlohaS2RPegInsertion, both wrist cameras, as the distillation
student sees it). The frames come from `--batch` envs reset with different seeds and stepped with
random actions, so every env has its own poses. Each available backend renders RGB + depth of
every camera of the batch in one jitted call, timed `--repeats` times after a warm-up; the median
is reported. One image = one camera of one env. `mujoco.Renderer` (OpenGL, sequential on the
host) renders the same frames one by one, RGB then depth, shadows off, as a reference.

Compare ratios between rows of one run; absolute numbers hold only for the machine in the header.
"""

# ruff: noqa: I001  (playground is imported first on purpose: MUJOCO_GL for mujoco.Renderer)
from __future__ import annotations

import playground  # noqa: F401  (XLA flags and MUJOCO_GL before jax and mujoco start)

import argparse
import os
import platform
import statistics
import time

import jax
import mujoco
import numpy as np

from playground import cli_checks, registry, render


def make_frames(env, renderer: render.Renderer, batch: int, steps: int):
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    state = jax.jit(jax.vmap(env.reset))(keys)
    step = jax.jit(jax.vmap(env.step))
    for i in range(steps):
        a = jax.random.uniform(jax.random.PRNGKey(i), (batch, env.action_size), minval=-1, maxval=1)
        state = step(state, a)
    frames = jax.vmap(renderer.frame, in_axes=(None, 0))(env.mjx_model, state.data)
    return state.data, frames


def time_call(fn, repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def bench_backend(env, backend: str, spec, batch: int, steps: int, repeats: int) -> dict:
    renderer = render.make_renderer(env.mj_model, spec, batch, backend=backend)
    _, frames = make_frames(env, renderer, batch, steps)
    fn = jax.jit(jax.vmap(renderer.render))
    first, dt = time_call(lambda: fn(frames), repeats)
    return {"first_s": first, "img_s": batch * len(spec.cameras) / dt}


def bench_gl(env, spec, batch: int, steps: int, repeats: int) -> dict:
    m = env.mj_model
    jr = render.make_renderer(m, spec, batch, backend="jax")  # only for its frame builder
    data, _ = make_frames(env, jr, batch, steps)
    qpos, mocap_pos, mocap_quat = (
        np.asarray(x) for x in (data.qpos, data.mocap_pos, data.mocap_quat)
    )
    gl = mujoco.Renderer(m, spec.height, spec.width)
    opt = mujoco.MjvOption()
    opt.geomgroup[:] = 0
    for g in spec.geom_groups:
        opt.geomgroup[g] = 1
    datas = []
    for i in range(batch):
        d = mujoco.MjData(m)
        d.qpos[:], d.mocap_pos[:], d.mocap_quat[:] = qpos[i], mocap_pos[i], mocap_quat[i]
        mujoco.mj_forward(m, d)
        datas.append(d)

    def update(d, cam):
        gl.update_scene(d, camera=cam, scene_option=opt)
        # Like the other backends by default: no shadows (llvmpipe draws a 4096^2 shadow map
        # per light and frame, 20x slower) and no reflections.
        gl.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        gl.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False

    def run():
        for d in datas:
            for cam in spec.cameras:
                update(d, cam)
                gl.render()
                gl.enable_depth_rendering()
                update(d, cam)
                gl.render()
                gl.disable_depth_rendering()

    first, dt = time_call(run, repeats)
    gl.close()
    return {"first_s": first, "img_s": batch * len(spec.cameras) / dt}


def main(argv: list[str] | None = None) -> None:
    p = cli_checks.ArgumentParser(
        prog="bench_render.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    positive = cli_checks.positive_int
    p.add_argument(
        "--env", type=cli_checks.choice(registry.ALL_ENVS), default="AlohaS2RPegInsertion"
    )
    p.add_argument("--cameras", nargs="+", default=["left/wrist_cam", "right/wrist_cam"])
    p.add_argument("--res", type=positive, nargs="+", default=[32, 64])
    p.add_argument("--batch", type=positive, nargs="+", default=[1, 64, 256])
    p.add_argument(
        "--backends",
        nargs="+",
        type=cli_checks.choice((*render.BACKENDS, "gl")),
        default=None,
        help="default: every available + gl",
    )
    p.add_argument(
        "--steps",
        type=cli_checks.nonnegative_int,
        default=10,
        help="random-action env steps before rendering",
    )
    p.add_argument("--repeats", type=positive, default=5)
    args = p.parse_args(argv)
    for backend in args.backends or ():
        why = None if backend == "gl" else render.unavailable_reason(backend)
        if why:  # before the env compiles, not when its turn in the table comes
            cli_checks.exit_usage(p, cli_checks.UsageError(f"--backends {backend}: {why}"))
    backends = args.backends or [*render.available_backends(), "gl"]
    env = registry.load(args.env)
    print(
        f"# device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
        f"env {args.env}, cameras {' '.join(args.cameras)}; auto = {render.default_backend()}"
    )
    print("| backend | res | N | first call s | img/s |")
    print("|---|---|---|---|---|")
    results = {}
    for res in args.res:
        spec = render.RenderSpec(cameras=tuple(args.cameras), width=res, height=res)
        for batch in args.batch:
            for backend in backends:
                if backend == "gl":
                    r = bench_gl(env, spec, batch, args.steps, args.repeats)
                else:
                    r = bench_backend(env, backend, spec, batch, args.steps, args.repeats)
                results[(backend, res, batch)] = r["img_s"]
                cells = [
                    backend,
                    f"{res}x{res}",
                    batch,
                    f"{r['first_s']:.2f}",
                    f"{r['img_s']:,.0f}",
                ]
                print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    for res in args.res:
        for batch in args.batch:
            j, w = results.get(("jax", res, batch)), results.get(("warp", res, batch))
            if j and w:
                print(f"jax / warp at {res}x{res}, N={batch}: {j / w:.2f}x")


if __name__ == "__main__":
    main()
