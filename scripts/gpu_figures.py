"""The pipeline's GPU figures in one timed run (issue 30): physics, rendering, teacher, DAgger.

    python scripts/gpu_figures.py --out "$OUT"            # on the GPU machine (scripts/gpu_run.sh)
    python scripts/gpu_figures.py --out /tmp/figs --tiny  # a few-minute check of every section

Sections, in this order, each in its own child process with its own wall-time budget:
- `info`: jax devices, package versions, GPU name (nvidia-smi), host CPU model.
- `physics`: env steps/s and physics steps/s (= env steps/s x n_substeps) of AlohaS2RPick and
  AlohaS2RPegInsertion under MJX-JAX (`impl="jax"`) at 1,024, 4,096 and 8,192 envs, with
  compile times apart (scripts/bench_env.py's rollout).
- `render`: images/s of the pure-JAX ray caster for AlohaS2RPegInsertionDistill's two wrist
  cameras at 32x32, RGB + depth, at 1,024 and 4,096 envs (scripts/bench_render.py's helpers),
  then, if time is left, other tiles and 64x64 at 4,096.
- `train`: the shipped AlohaS2RPick teacher command (params/aloha_s2r_pick_native.json) with
  `--impl jax`, as a subprocess of learning/train_jax_ppo.py, stopped at `--train-cap` seconds
  from launch or as soon as a held-out evaluation reaches `--train-target` (the shipped
  teacher's 91.5%); its metrics.jsonl, config.json, final.json and policy files are copied
  into the output folder.
- `dagger`: DAgger (playground/training/dagger.py, as experimental/train_dagger.py drives it)
  on AlohaS2RPegInsertionDistill: env steps/s of the collection and gradient samples/s of the
  updates, compile apart.

Compiles: a section traces its programs one after the other and compiles them on a thread pool
(XLA compiles without the GIL), so they overlap; each row gives its own lower and compile
walls. Budgets run on one clock: section i must end by the sum of the budgets up to i (so time a
section leaves unused goes to the next), and all by `--total-budget`. A child past its deadline
is killed with its whole process group. Every measurement is written to `<out>/results.json`
as soon as it is made, so a killed section (or a killed run) still brings back what finished;
a failure is recorded (error string and the tail of stderr) and the next section runs.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
RESULTS = "results.json"
SECTIONS = ("info", "physics", "render", "train", "dagger")
SHIPPED_CARD = ROOT / "params" / "aloha_s2r_pick_native.json"
SHIPPED_SUCCESS = 0.915  # the shipped pick teacher: 937/1024 held-out starts
TRAIN_LOGDIR = Path("/tmp/s2r_gpu_train")
# What of the teacher run comes back (the device returns at most 8 files from $OUT).
TRAIN_FILES = {
    "metrics.jsonl": "train_metrics.jsonl",
    "config.json": "train_config.json",
    "final.json": "train_final.json",
}
TRAIN_POLICIES = ("best_policy", "policy")  # any suffix (.pkl or .safetensors)
PACKAGES = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "mujoco",
    "mujoco-core",
    "mujoco-mjx",
    "brax",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "scipy",
    "ml-collections",
    "tensorboardX",
    "trimesh",
    "jaxopt",
    "safetensors",
    "onnxruntime",
)


# ----------------------------------------------------------------------------- results file
def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read_results(out: Path) -> dict[str, Any]:
    path = out / RESULTS
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    return {"sections": {}}


def write_results(out: Path, results: dict[str, Any]) -> None:
    tmp = out / (RESULTS + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, out / RESULTS)


class Recorder:
    """A child's view of its section in results.json; every call rewrites the file."""

    def __init__(self, out: Path, section: str):
        self.out, self.section = out, section
        self._lock = threading.Lock()  # compile threads report too

    def _update(self, fn) -> None:
        with self._lock:
            results = read_results(self.out)
            sec = results.setdefault("sections", {}).setdefault(self.section, {})
            fn(sec)
            write_results(self.out, results)

    def set(self, **fields: Any) -> None:
        self._update(lambda sec: sec.update(fields))

    def add(self, key: str, row: dict[str, Any]) -> None:
        self._update(lambda sec: sec.setdefault(key, []).append(row))
        print(f"[{self.section}] {json.dumps(row, default=str)}", flush=True)


def error_text(e: BaseException) -> str:
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return f"{type(e).__name__}: {e}\n" + "".join(tb[-6:])


class Clock:
    """A child's deadline (absolute, time.time()) and how long its measurements took."""

    def __init__(self, deadline: float):
        self.deadline = deadline

    def left(self) -> float:
        return self.deadline - time.time()

    def fits(self, estimate: float) -> bool:
        return self.left() > estimate


# ----------------------------------------------------------------------------- host facts
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def host_facts() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "env": {
            k: os.environ.get(k)
            for k in (
                "XLA_FLAGS",
                "S2R_NO_XLA_FLAGS",
                "S2R_JAX_CACHE_DIR",
                "XLA_PYTHON_CLIENT_PREALLOCATE",
                "XLA_PYTHON_CLIENT_MEM_FRACTION",
                "PYTHONPATH",
                "MUJOCO_GL",
            )
        },
    }


def nvidia_smi() -> dict[str, Any]:
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return {"query": query, "stdout": out.stdout.strip(), "rc": out.returncode}
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": str(e)}


def versions() -> dict[str, str | None]:
    from importlib import metadata

    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


# ----------------------------------------------------------------------------- sections
def section_info(args, rec: Recorder, clock: Clock) -> None:
    rec.set(host=host_facts(), nvidia_smi=nvidia_smi(), versions=versions())
    t0 = time.perf_counter()
    import playground  # noqa: F401, I001  (runtime settings first, as every section gets them)
    import jax
    import jax.numpy as jnp

    x = jax.block_until_ready(jnp.arange(1024.0).sum())
    devices = [
        {"id": d.id, "platform": d.platform, "kind": d.device_kind, "str": str(d)}
        for d in jax.devices()
    ]
    rec.set(
        jax_version=jax.__version__,
        default_backend=jax.default_backend(),
        devices=devices,
        first_op_s=time.perf_counter() - t0,
        first_op_ok=bool(float(x) == 523776.0),
        xla_flags_after_import=os.environ.get("XLA_FLAGS"),
    )
    with contextlib.suppress(Exception):
        stats = jax.devices()[0].memory_stats() or {}
        rec.set(memory_stats={k: stats[k] for k in ("bytes_limit", "bytes_in_use") if k in stats})


class Ahead:
    """An ahead-of-time compiled call; if later arguments differ in type from the ones it was
    compiled for (say a weak type that a scan carry made strong), the jitted function takes
    over (and compiles again), and `fallbacks` counts it."""

    def __init__(self, compiled, jitted):
        self.compiled, self.jitted, self.fallbacks = compiled, jitted, 0

    def __call__(self, *args):
        if not self.fallbacks:
            try:
                return self.compiled(*args)
            except TypeError:
                self.fallbacks += 1
        return self.jitted(*args)


class Compiler:
    """Lowers in the calling thread and compiles on a thread pool, where XLA runs without the
    GIL: the next program is traced while earlier ones compile, and compiles overlap."""

    def __init__(self, threads: int, rec: Recorder | None = None):
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, threads))
        self.rec, self.t0 = rec, time.perf_counter()

    def _compile(self, label: str, jitted, lowered, lower_s: float):
        t0 = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - t0
        if self.rec is not None and label:  # so that a section killed later still has them
            done = time.perf_counter() - self.t0
            row = {"program": label, "lower_s": lower_s, "compile_s": compile_s, "done_at_s": done}
            self.rec.add("compiles", row)
        return Ahead(compiled, jitted), lower_s, compile_s

    def submit(self, jitted, *args, label: str = "") -> concurrent.futures.Future:
        t0 = time.perf_counter()
        lowered = jitted.lower(*args)
        lower_s = time.perf_counter() - t0
        return self.pool.submit(self._compile, label, jitted, lowered, lower_s)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _result(future: concurrent.futures.Future, clock: Clock):
    return future.result(timeout=max(clock.left(), 1.0))


def _tile_to(tree, batch: int):
    """A batch of `batch` envs from a smaller one: envs repeated in order (leading axis)."""
    import jax
    import jax.numpy as jnp

    def tile(x):
        return x[jnp.arange(batch) % x.shape[0]]

    return jax.tree_util.tree_map(tile, tree)


def _shape_at(tree, batch: int):
    import jax

    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct((batch, *s.shape[1:]), s.dtype, weak_type=s.weak_type),
        tree,
    )


def section_physics(args, rec: Recorder, clock: Clock) -> None:
    sys.path.insert(0, str(SCRIPTS))
    import bench_env  # noqa: E402  (scripts/ is not a package)
    import jax
    import jax.numpy as jnp

    from playground import registry

    base = min(args.physics_batch)
    jobs = [(b, name) for b in args.physics_batch for name in args.physics_envs]
    rec.set(
        what="MJX-JAX env steps (raw env, random actions, no auto-reset): a jitted lax.scan of "
        "steps_per_call batched env steps (scripts/bench_env.py make_rollout), run once "
        "(first_step_run_s), then timed `repeats` times; median. The envs are reset once per "
        "task at the smallest batch (different seeds); larger batches repeat those states "
        "(each env then draws its own random actions). Compile apart: each program is "
        "traced in turn and compiled on a thread pool, so compiles overlap (compile_*_s "
        "are walls under that overlap; jit_*_s = lower + compile + first run).",
        device=jax.devices()[0].device_kind,
        steps_per_call=args.physics_steps,
        repeats=args.physics_repeats,
        impl="jax",
        reset_batch=base,
        order=[f"{n}@{b}" for b, n in jobs],
    )
    comp = Compiler(args.compile_threads, rec)
    envs: dict[str, Any] = {}
    pending = []
    t_lower = time.perf_counter()
    keys = jax.random.split(jax.random.PRNGKey(0), base)
    for batch, name in jobs:  # batch-major: a cut-short section still has both envs
        try:
            if name not in envs:
                env = registry.load(name, config_overrides={"impl": "jax"})
                reset = jax.vmap(env.reset)
                shape = jax.eval_shape(reset, keys)
                envs[name] = {
                    "env": env,
                    "shape": shape,
                    "reset": comp.submit(jax.jit(reset), keys, label=f"{name}@{base} reset"),
                }
            task = envs[name]
            shape = _shape_at(task["shape"], batch)
            rollout = jax.jit(bench_env.make_rollout(task["env"], batch, args.physics_steps))
            key = jax.random.PRNGKey(1)
            f_roll = comp.submit(rollout, shape, key, label=f"{name}@{batch} rollout")
            f_tile = None
            if batch != base:
                tile = jax.jit(functools.partial(_tile_to, batch=batch))
                f_tile = comp.submit(tile, task["shape"])
            pending.append((batch, name, f_roll, f_tile))
        except Exception as e:  # noqa: BLE001 - record and go on
            rec.add("rows", {"env": name, "batch": batch, "error": error_text(e)})
    rec.set(lower_phase_s=time.perf_counter() - t_lower)
    for batch, name, f_roll, f_tile in pending:
        t0 = time.perf_counter()
        try:
            task = envs[name]
            row: dict[str, Any] = {"env": name, "impl": "jax", "batch": batch}
            if "state" not in task:
                reset_c, lower_r, compile_r = _result(task["reset"], clock)
                t1 = time.perf_counter()
                task["state"] = jax.block_until_ready(reset_c(keys))
                first_reset = time.perf_counter() - t1
                row |= {
                    "lower_reset_s": lower_r,
                    "compile_reset_s": compile_r,
                    "first_reset_run_s": first_reset,
                    "jit_reset_s": lower_r + compile_r + first_reset,
                }
            state = task["state"]
            if f_tile is not None:
                tile_c, _, _ = _result(f_tile, clock)
                state = jax.block_until_ready(tile_c(state))
            roll_c, lower_s, compile_s = _result(f_roll, clock)
            t1 = time.perf_counter()
            state = jax.block_until_ready(roll_c(state, jax.random.PRNGKey(1)))
            first_step = time.perf_counter() - t1
            times = []
            for i in range(args.physics_repeats):
                t1 = time.perf_counter()
                state = jax.block_until_ready(roll_c(state, jax.random.PRNGKey(2 + i)))
                times.append(time.perf_counter() - t1)
            dt = statistics.median(times)
            n_sub = task["env"].n_substeps
            row |= {
                "lower_step_s": lower_s,
                "compile_step_s": compile_s,
                "first_step_run_s": first_step,
                "jit_step_s": lower_s + compile_s + first_step,
                "call_s": dt,
                "calls_s": times,
                "env_steps_s": batch * args.physics_steps / dt,
                "n_substeps": n_sub,
                "physics_steps_s": batch * args.physics_steps * n_sub / dt,
                "finite": bool(jnp.all(jnp.isfinite(state.data.qpos))),
                "aot_fallbacks": roll_c.fallbacks,
                "wait_and_run_s": time.perf_counter() - t0,
            }
            rec.add("rows", row)
            del state
        except Exception as e:  # noqa: BLE001
            rec.add("rows", {"env": name, "batch": batch, "error": error_text(e)})
    comp.close()


def _distill_spec():
    from playground import registry, render

    v = registry.get_default_config("AlohaS2RPegInsertionDistill").vision
    return render.RenderSpec(
        cameras=tuple(v.cameras),
        width=int(v.width),
        height=int(v.height),
        geom_groups=tuple(v.geom_groups),
        shadows=bool(v.shadows),
    )


def section_render(args, rec: Recorder, clock: Clock) -> None:
    sys.path.insert(0, str(SCRIPTS))
    import bench_render  # noqa: E402
    import jax
    import jax.numpy as jnp

    from playground import registry, render

    spec = _distill_spec()
    base = min(args.render_batch)
    rec.set(
        what="Pure-JAX ray caster (backend jax), RGB + depth of every camera in one jitted "
        "vmapped call (compiled ahead, compiles overlapping on a thread pool), run once "
        "(first_call_s), then timed `repeats` times; median. One image = one camera of one "
        "env. Frames: `frames_batch` envs reset with different seeds and stepped "
        "`frames_steps` times with random actions (physics `frames_impl`; native keeps "
        "MJX compiles out of this section); larger batches repeat those frames (the "
        "caster's cost does not depend on which env is which).",
        device=jax.devices()[0].device_kind,
        spec={
            "cameras": list(spec.cameras),
            "width": spec.width,
            "height": spec.height,
            "geom_groups": list(spec.geom_groups),
            "shadows": spec.shadows,
        },
        frames_batch=base,
        frames_steps=args.render_steps,
        repeats=args.render_repeats,
    )
    t0 = time.perf_counter()
    frames, env, impl, errors = None, None, None, []
    for impl in args.render_frames_impl:
        try:
            env = registry.load(args.render_env, config_overrides={"impl": impl})
            renderer = render.make_renderer(env.mj_model, spec, base, backend="jax")
            _, frames = bench_render.make_frames(env, renderer, base, args.render_steps)
            jax.block_until_ready(frames)
            break
        except Exception as e:  # noqa: BLE001 - try the next physics
            errors.append(f"{impl}: {error_text(e)}")
            frames = None
    rec.set(frames_setup_s=time.perf_counter() - t0, env=args.render_env, frames_impl=impl)
    if errors:
        rec.set(frames_errors=errors)
    if frames is None:
        raise RuntimeError("no frames: " + " | ".join(errors))

    def frames_of(batch: int):
        idx = jnp.arange(batch) % base
        return jax.tree_util.tree_map(lambda x: x[idx], frames)

    jobs = [("rows", b, spec, args.render_tile) for b in args.render_batch]
    top = max(args.render_batch)
    jobs += [("extra_rows", top, spec, t) for t in args.render_extra_tiles]
    for res in args.render_extra_res:
        sp = dataclasses.replace(spec, width=res, height=res)
        jobs.append(("extra_rows", top, sp, args.render_tile))
    comp = Compiler(args.compile_threads, rec)
    pending = []
    for key, batch, sp, tile in jobs:
        try:
            renderer = render.make_renderer(env.mj_model, sp, batch, backend="jax", tile=tile)
            fb = frames_of(batch)
            label = f"render {batch} envs {sp.width}x{sp.height} tile {tile}"
            fut = comp.submit(jax.jit(jax.vmap(renderer.render)), fb, label=label)
            pending.append((key, batch, sp, tile, fb, fut))
        except Exception as e:  # noqa: BLE001
            rec.add(key, {"batch": batch, "res": sp.width, "tile": tile, "error": error_text(e)})
    for key, batch, sp, tile, fb, fut in pending:
        t0 = time.perf_counter()
        try:
            fn, lower_s, compile_s = _result(fut, clock)
            first, dt = bench_render.time_call(lambda fn=fn, fb=fb: fn(fb), args.render_repeats)
            n_img = batch * len(sp.cameras)
            rec.add(
                key,
                {
                    "batch": batch,
                    "res": f"{sp.width}x{sp.height}",
                    "tile": tile,
                    "cameras": len(sp.cameras),
                    "lower_s": lower_s,
                    "compile_s": compile_s,
                    "first_call_s": first,
                    "call_s": dt,
                    "img_s": n_img / dt,
                    "env_frames_s": batch / dt,
                    "aot_fallbacks": fn.fallbacks,
                    "wait_and_run_s": time.perf_counter() - t0,
                },
            )
        except Exception as e:  # noqa: BLE001
            rec.add(key, {"batch": batch, "res": sp.width, "tile": tile, "error": error_text(e)})
    comp.close()


# ----- train
def train_command(args) -> list[str]:
    """The shipped card's command with --impl jax and our logdir (plus --train-args)."""
    card = json.loads(SHIPPED_CARD.read_text())
    words = shlex.split(card["commands"][0])
    words = words[words.index("learning/train_jax_ppo.py") + 1 :]
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w in ("--impl", "--logdir"):
            skip = True  # and its value
        elif not w.startswith(("--impl=", "--logdir=")):
            out.append(w)
    out += ["--impl", "jax", "--logdir", str(TRAIN_LOGDIR)]
    if args.tiny:
        out += shlex.split(
            "--num_envs 8 --batch_size 8 --num_minibatches 2 --num_updates_per_batch 1 "
            "--num_timesteps 960 --num_evals 3 --num_eval_envs 8"
        )
    out += shlex.split(args.train_args)
    return [sys.executable, str(ROOT / "learning" / "train_jax_ppo.py"), *out]


def _run_dir() -> Path | None:
    dirs = [p for p in TRAIN_LOGDIR.glob("AlohaS2RPick-*") if p.is_dir()]
    return max(dirs, key=lambda p: p.stat().st_mtime) if dirs else None


def copy_train_files(out: Path) -> list[str]:
    """Copies the run's small files into `out` (flat names); returns what was copied."""
    run = _run_dir()
    if run is None:
        return []
    copied = []
    for src, dst in TRAIN_FILES.items():
        if (run / src).is_file():
            shutil.copyfile(run / src, out / dst)
            copied.append(dst)
    for stem in TRAIN_POLICIES:
        for p in sorted(run.glob(f"{stem}.*")):
            if ".tmp" in p.name:
                continue
            shutil.copyfile(p, out / f"train_{p.name}")
            copied.append(f"train_{p.name}")
    return copied


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def _curve(rows: list[dict[str, Any]], seen_at: dict[int, float]) -> list[dict[str, Any]]:
    keep = ("eval/success_rate", "eval/episode_reward", "training/sps", "training/epoch_seconds")
    curve = []
    for i, r in enumerate(rows):
        point = {"env_steps": r.get("step")}
        point |= {k.split("/", 1)[1]: r[k] for k in keep if k in r}
        if i in seen_at:
            point["t_since_launch_s"] = seen_at[i]
        curve.append(point)
    return curve


def train_summary(curve: list[dict[str, Any]], target: float) -> dict[str, Any]:
    s: dict[str, Any] = {}
    first_eval = next((p for p in curve if p["env_steps"] == 0), None)
    if first_eval and "t_since_launch_s" in first_eval:
        s["launch_to_step0_eval_s"] = first_eval["t_since_launch_s"]
    epochs = [p["epoch_seconds"] for p in curve if "epoch_seconds" in p]
    if epochs:
        s["first_epoch_s"] = epochs[0]
    if len(epochs) > 1:
        steady = statistics.median(epochs[1:])
        s["steady_epoch_s"] = steady
        s["epoch_compile_estimate_s"] = max(epochs[0] - steady, 0.0)
    sps = [p["sps"] for p in curve if "sps" in p][1:]
    if sps:
        s["steady_train_env_steps_s"] = statistics.median(sps)
    # Per evaluation: the gap between two metrics lines minus the epoch (eval + saving).
    gaps = [
        b["t_since_launch_s"] - a["t_since_launch_s"] - b["epoch_seconds"]
        for a, b in zip(curve, curve[1:], strict=False)
        if "t_since_launch_s" in a and "t_since_launch_s" in b and "epoch_seconds" in b
    ]
    if len(gaps) > 1:
        s["eval_and_save_per_epoch_s"] = statistics.median(gaps[1:])
    if "launch_to_step0_eval_s" in s and "epoch_compile_estimate_s" in s:
        s["jit_estimate_s"] = (
            s["launch_to_step0_eval_s"]
            - s.get("eval_and_save_per_epoch_s", 0.0)
            + s["epoch_compile_estimate_s"]
        )
        s["jit_estimate_note"] = (
            "launch to the step-0 evaluation (imports, env build, evaluator compile and one "
            "evaluation) minus one steady evaluation, plus the first epoch minus a steady epoch"
        )
    evals = [p for p in curve if "success_rate" in p]
    if evals:
        best = max(evals, key=lambda p: (p["success_rate"], p["env_steps"]))
        s["best_success_rate"] = best["success_rate"]
        s["best_env_steps"] = best["env_steps"]
        s["last_success_rate"] = evals[-1]["success_rate"]
        s["last_env_steps"] = evals[-1]["env_steps"]
        hit = next((p for p in evals if p["success_rate"] >= target), None)
        if hit is not None:
            s["target_reached_env_steps"] = hit["env_steps"]
            s["target_reached_s"] = hit.get("t_since_launch_s")
    return s


def _pump(stream, sink, tail: collections.deque) -> None:
    for line in iter(stream.readline, ""):
        tail.append(line.rstrip("\n"))
        sink.write(line)
        sink.flush()


def section_train(args, rec: Recorder, clock: Clock) -> None:
    cmd = train_command(args)
    cap = min(args.train_cap, clock.left() - args.train_copy_margin)
    rec.set(
        command=" ".join(shlex.quote(w) for w in cmd[1:]),
        shipped_command=json.loads(SHIPPED_CARD.read_text())["commands"][0],
        why_these_sizes="Shipped PPO settings kept whole: num_envs 2048, batch_size 512, "
        "num_minibatches 32, unroll 10 (163,840 env steps per update) are Playground's own "
        "AlohaPick GPU config (brax_ppo_config; research playground_s2r.md section 6), so "
        "only --impl changes (native -> jax).",
        cap_s=cap,
        target_success=args.train_target,
        note="cap counts from launch (imports, env build and compiles included); the run is "
        "stopped (SIGTERM) at the cap or after the first held-out evaluation at or above the "
        "target, once that epoch's best_policy file is written.",
    )
    if cap < 20:
        rec.set(stopped_by="not started: no time left")
        return
    shutil.rmtree(TRAIN_LOGDIR, ignore_errors=True)
    TRAIN_LOGDIR.mkdir(parents=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t_launch = time.time()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    tail: collections.deque = collections.deque(maxlen=40)
    pump = threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, tail), daemon=True)
    pump.start()
    seen_at: dict[int, float] = {}
    stopped_by = None
    n_seen = 0
    while True:
        rc = proc.poll()
        run = _run_dir()
        rows = _read_metrics(run / "metrics.jsonl") if run else []
        if len(rows) > n_seen:
            for i in range(n_seen, len(rows)):
                seen_at[i] = time.time() - t_launch
            n_seen = len(rows)
            curve = _curve(rows, seen_at)
            rec.set(curve=curve, summary=train_summary(curve, args.train_target))
            copy_train_files(rec.out)
            last = rows[-1]
            if last.get("eval/success_rate", -1.0) >= args.train_target and last.get("step"):
                stopped_by = "target"
                _wait_for_checkpoint(run, int(last["step"]), proc, 30.0)
                break
        if rc is not None:
            stopped_by = "finished" if rc == 0 else f"exited rc={rc}"
            break
        if time.time() - t_launch > cap:
            stopped_by = "cap"
            break
        time.sleep(0.5)
    wall = time.time() - t_launch
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    pump.join(5)
    run = _run_dir()
    rows = _read_metrics(run / "metrics.jsonl") if run else []
    for i in range(n_seen, len(rows)):
        seen_at[i] = wall
    curve = _curve(rows, seen_at)
    fields: dict[str, Any] = {
        "stopped_by": stopped_by,
        "wall_s": wall,
        "returncode": proc.returncode,
        "curve": curve,
        "summary": train_summary(curve, args.train_target),
        "files": copy_train_files(rec.out),
        "run_dir": str(run) if run else None,
        "log_tail": list(tail),
    }
    if run and (run / "final.json").is_file():
        with contextlib.suppress(ValueError):
            fields["final"] = json.loads((run / "final.json").read_text())
    rec.set(**fields)


def _wait_for_checkpoint(run: Path, step: int, proc, timeout: float) -> None:
    """The epoch's best policy is written before its checkpoint: wait for the checkpoint."""
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        ck = run / "checkpoints"
        if ck.is_dir() and any(p.name.startswith(str(step)) for p in ck.iterdir()):
            time.sleep(1.0)
            return
        time.sleep(0.25)


# ----- dagger
def _find_teacher(env_name: str) -> Path | None:
    from playground.training import policy_file

    for root in (ROOT / "params", ROOT / "logs"):
        for p in sorted(root.rglob("*")):
            if p.suffix not in (".pkl", ".safetensors") or not p.is_file():
                continue
            try:
                if policy_file.read_policy(p)["env_name"] == env_name:
                    return p
            except Exception:  # noqa: BLE001, S112 - not a teacher file of that env
                continue
    return None


def _untrained_teacher(env, teacher_env: str, path: Path) -> Path:
    """A randomly initialised PPO teacher of the real teacher's shape (throughput only)."""
    import jax
    import jax.numpy as jnp
    from brax.training.acme import running_statistics, specs

    from playground.training import policy_file, ppo, ppo_params

    cfg = ppo_params.ppo_config(teacher_env)
    obs_size = {k: tuple(env.observation_size[k]) for k in ("state", "privileged_state")}
    nets = ppo.make_networks(obs_size, env.action_size, cfg.network)
    k_p, k_v = jax.random.split(jax.random.PRNGKey(0))
    norm = running_statistics.init_state(
        {k: specs.Array(v, jnp.dtype("float32")) for k, v in obs_size.items()}
    )
    params = (norm, nets.policy_network.init(k_p), nets.value_network.init(k_v))
    return policy_file.save_policy(
        path,
        env_name=teacher_env,
        params=params,
        observation_size=obs_size,
        action_size=env.action_size,
        policy_hidden_layer_sizes=tuple(cfg.network.policy_hidden_layer_sizes),
        value_hidden_layer_sizes=tuple(cfg.network.value_hidden_layer_sizes),
        activation=cfg.network.activation,
        policy_obs_key=cfg.network.policy_obs_key,
        value_obs_key=cfg.network.value_obs_key,
        extra={"note": "untrained: random init, for throughput measurements only"},
    )


def section_dagger(args, rec: Recorder, clock: Clock) -> None:
    import jax

    from playground import registry
    from playground.training import dagger, distill

    t0 = time.perf_counter()
    env_name = "AlohaS2RPegInsertionDistill"
    env = registry.load(env_name, config_overrides={"impl": "jax", "vision.backend": "jax"})
    teacher_env = type(env).TEACHER_ENV
    if args.dagger_teacher == "none":
        rec.set(skipped="--dagger-teacher none")
        return
    if args.dagger_teacher not in ("auto", "untrained"):
        teacher_path, kind = Path(args.dagger_teacher), "given"
    else:
        found = _find_teacher(teacher_env) if args.dagger_teacher == "auto" else None
        if found is not None:
            teacher_path, kind = found, "found in params/ or logs/"
        else:
            teacher_path = _untrained_teacher(
                env, teacher_env, Path("/tmp/s2r_gpu_dagger") / f"untrained_teacher{_suffix()}"
            )
            kind = (
                f"untrained (random init; no {teacher_env} teacher is shipped): env steps/s "
                "and gradient samples/s only, success means nothing"
            )
    teacher = distill.load_teacher(teacher_path, env)
    cfg = dagger.default_config()
    cfg.num_envs = args.dagger_num_envs
    cfg.unroll_length = args.dagger_unroll
    cfg.episode_length = int(env.config.episode_length)
    cfg.buffer_size = args.dagger_buffer
    cfg.batch_size = args.dagger_batch
    cfg.updates_per_iteration = args.dagger_updates
    cfg.update_unroll = args.dagger_update_unroll
    student = distill.make_student(env, cfg)
    k_init, k_run = jax.random.split(jax.random.PRNGKey(0))
    try:
        params, encoder_from = distill.init_student_params(
            student, env, k_init, str(distill.DEFAULT_ENCODER)
        )
    except Exception as e:  # noqa: BLE001 - orbax of another version: random encoder
        params, encoder_from = distill.init_student_params(student, env, k_init, "none")
        encoder_from += f" (pretrained encoder failed: {type(e).__name__}: {e})"
    loop = dagger.Dagger(env, teacher, student, cfg, type(env).POSE_BODY)
    rec.set(
        env=env_name,
        teacher=str(teacher_path),
        teacher_kind=kind,
        encoder=encoder_from,
        config=cfg.to_dict(),
        device=jax.devices()[0].device_kind,
        what="one iteration = one jitted collection (num_envs x unroll_length env steps, "
        "rendering both cameras, teacher labels, buffer write) + updates_per_iteration / "
        "update_unroll jitted update calls (update_unroll optax steps of batch_size samples "
        "each), compiled ahead (compile_*_s); `steady` = medians after iteration 0",
    )
    t1 = time.perf_counter()
    # Collection and update are traced on abstract states and compile on two threads while
    # this thread builds the real state (its env reset compiles meanwhile).
    comp = Compiler(2, rec)
    shape = jax.eval_shape(loop.init, k_run, params)
    f_collect = comp.submit(loop._collect, shape, label="collect")
    after = jax.eval_shape(loop._collect_impl, shape)[0]  # the state an update gets
    f_update = comp.submit(loop._update, after, label="update")
    t2 = time.perf_counter()
    state = loop.init(k_run, params)
    jax.block_until_ready(state.env_state)
    rec.set(setup_s=t1 - t0, lower_all_s=t2 - t1, init_and_reset_s=time.perf_counter() - t2)
    collect, lower_c, compile_c = _result(f_collect, clock)
    update, lower_u, compile_u = _result(f_update, clock)
    comp.close()
    rec.set(
        lower_collect_s=lower_c,
        compile_collect_s=compile_c,
        lower_update_s=lower_u,
        compile_update_s=compile_u,
        ready_s=time.perf_counter() - t1,
        compile_note="collection and update compiled at the same time on two threads, while "
        "the main thread reset the envs (init_and_reset_s, its compile included); ready_s = "
        "from tracing to both compiled",
    )
    steps = cfg.num_envs * cfg.unroll_length
    samples = cfg.updates_per_iteration * cfg.batch_size
    last = 0.0
    for it in range(args.dagger_iterations):
        if last and not clock.fits(1.2 * last):
            rec.add("skipped", {"iteration": it, "reason": "budget"})
            break
        t_it = time.perf_counter()
        state, _ = collect(state)
        jax.block_until_ready(state.buffer_count)
        collect_s = time.perf_counter() - t_it
        t_up = time.perf_counter()
        for _ in range(cfg.updates_per_iteration // cfg.update_unroll):
            state, _ = update(state)
        jax.block_until_ready(state.params)
        update_s = time.perf_counter() - t_up
        rec.add(
            "iterations",
            {
                "iteration": it,
                "collect_s": collect_s,
                "update_s": update_s,
                "env_steps": steps,
                "env_steps_s": steps / collect_s,
                "images_s": steps * len(env.config.vision.cameras) / collect_s,
                "gradient_samples": samples,
                "gradient_samples_s": samples / update_s,
                "iteration_s": collect_s + update_s,
                "aot_fallbacks": collect.fallbacks + update.fallbacks,
            },
        )
        last = time.perf_counter() - t_it
    its = read_results(rec.out)["sections"]["dagger"].get("iterations", [])
    if len(its) > 1:
        rec.set(
            steady={
                k: statistics.median(r[k] for r in its[1:])
                for k in ("env_steps_s", "gradient_samples_s", "iteration_s")
            }
        )


def _suffix() -> str:
    """The policy-file suffix of this checkout (.pkl, or .safetensors once that lands)."""
    from playground.training import policy_file

    return getattr(policy_file, "SUFFIX", ".pkl")


SECTION_FNS = {
    "info": section_info,
    "physics": section_physics,
    "render": section_render,
    "train": section_train,
    "dagger": section_dagger,
}


# ----------------------------------------------------------------------------- parent
def run_child(args, name: str, deadline: float, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        *sys.argv[1:],
        "--child",
        name,
        "--deadline",
        f"{deadline:.3f}",
    ]
    t0 = time.time()
    # Its own process group (not session: the device ends a command's leftovers by session),
    # so that a kill takes the trainer grandchild too.
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, bufsize=1, process_group=0
    )
    _CURRENT["proc"], _CURRENT["name"] = proc, name
    tail: collections.deque = collections.deque(maxlen=30)
    pump = threading.Thread(target=_pump, args=(proc.stderr, sys.stderr, tail), daemon=True)
    pump.start()
    status = "ok"
    try:
        proc.wait(timeout=max(deadline - time.time(), 1.0))
    except subprocess.TimeoutExpired:
        status = "timeout"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(8)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    pump.join(5)
    if status == "ok" and proc.returncode != 0:
        status = f"crashed rc={proc.returncode}"
    return {
        "status": status,
        "returncode": proc.returncode,
        "wall_s": time.time() - t0,
        "stderr_tail": [line for line in tail if "Failed to import" not in line][-20:],
    }


_CURRENT: dict[str, Any] = {"proc": None, "name": None, "out": None}


def _on_term(signum, _frame) -> None:
    """`timeout` (or the device) stops the run: end the running section, say so, exit."""
    proc = _CURRENT["proc"]
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    out = _CURRENT["out"]
    if out is not None:
        with contextlib.suppress(Exception):
            results = read_results(out)
            results["killed"] = f"signal {signum} during {_CURRENT['name']}"
            if _CURRENT["name"] == "train":
                results["sections"].setdefault("train", {})["files"] = copy_train_files(out)
            write_results(out, results)
    sys.exit(128 + signum)


def parent(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _CURRENT["out"] = out
    signal.signal(signal.SIGTERM, _on_term)
    start = time.time()
    budgets = {s: getattr(args, f"budget_{s}") for s in SECTIONS}
    results = read_results(out)
    results.update(
        schema="s2r-playground/gpu-figures/v1",
        started_utc=_now(),
        argv=sys.argv[1:],
        tiny=args.tiny,
        total_budget_s=args.total_budget,
        budgets_s=budgets,
        host=host_facts(),
    )
    results.setdefault("sections", {})
    write_results(out, results)
    cumulative = 0.0
    for name in SECTIONS:
        cumulative += budgets[name]
        if name not in args.sections:
            continue
        deadline = start + min(cumulative, args.total_budget)
        left = deadline - time.time()
        results = read_results(out)
        sec = results["sections"].setdefault(name, {})
        sec.update(budget_s=left, started_s=time.time() - start)
        if left < args.min_section:
            sec["status"] = f"skipped: {left:.0f} s left"
            write_results(out, results)
            print(f"== {name}: skipped ({left:.0f} s left)", flush=True)
            continue
        write_results(out, results)
        print(f"== {name}: {left:.0f} s", flush=True)
        outcome = run_child(args, name, deadline, out)
        results = read_results(out)
        results["sections"].setdefault(name, {}).update(outcome)
        if name == "train":  # the child may have been killed before its last copy
            with contextlib.suppress(OSError):
                results["sections"]["train"]["files"] = copy_train_files(out)
        results["elapsed_s"] = time.time() - start
        write_results(out, results)
        print(f"== {name}: {outcome['status']} in {outcome['wall_s']:.0f} s", flush=True)
    results = read_results(out)
    results["finished_utc"] = _now()
    results["elapsed_s"] = time.time() - start
    write_results(out, results)
    print(f"results: {out / RESULTS} ({results['elapsed_s']:.0f} s)", flush=True)


def child(args) -> None:
    out = Path(args.out)
    rec = Recorder(out, args.child)
    clock = Clock(args.deadline)
    try:
        SECTION_FNS[args.child](args, rec, clock)
        rec.set(child_done=True)
    except Exception as e:  # noqa: BLE001 - the parent records the status, we the reason
        rec.set(error=error_text(e))
        print(error_text(e), file=sys.stderr, flush=True)
        sys.exit(1)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True, help="output folder (results.json and train files)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes, for a CPU check")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--total-budget", type=float, default=510.0, help="seconds for everything")
    p.add_argument("--min-section", type=float, default=15.0, help="skip a section with less")
    p.add_argument("--compile-threads", type=int, default=12, help="concurrent XLA compiles")
    b = p.add_argument_group("section budgets (seconds; unused time passes to the next)")
    for name, default in (
        ("info", 30),
        ("physics", 120),
        ("render", 70),
        ("train", 250),
        ("dagger", 40),
    ):
        b.add_argument(f"--budget-{name}", type=float, default=default)
    ph = p.add_argument_group("physics")
    ph.add_argument("--physics-envs", nargs="+", default=["AlohaS2RPick", "AlohaS2RPegInsertion"])
    ph.add_argument("--physics-batch", nargs="+", type=int, default=[1024, 4096, 8192])
    ph.add_argument("--physics-steps", type=int, default=20, help="env steps per timed call")
    ph.add_argument("--physics-repeats", type=int, default=3)
    r = p.add_argument_group("render")
    r.add_argument("--render-env", default="AlohaS2RPegInsertion", help="physics of the frames")
    r.add_argument("--render-batch", nargs="+", type=int, default=[1024, 4096])
    r.add_argument("--render-steps", type=int, default=3, help="random steps before rendering")
    r.add_argument(
        "--render-frames-impl",
        nargs="+",
        default=["native", "jax"],
        help="physics for the frames, tried in turn",
    )
    r.add_argument("--render-repeats", type=int, default=5)
    r.add_argument("--render-tile", type=int, default=16, help="the caster's tile (its default)")
    r.add_argument(
        "--render-extra-tiles",
        nargs="*",
        type=int,
        default=[8, 32],
        help="if time is left: other tiles at the largest batch",
    )
    r.add_argument(
        "--render-extra-res",
        nargs="*",
        type=int,
        default=[64],
        help="if time is left: other resolutions at the largest batch (anchors are at 64x64)",
    )
    t = p.add_argument_group("train")
    t.add_argument("--train-cap", type=float, default=240.0, help="seconds from launch")
    t.add_argument("--train-target", type=float, default=SHIPPED_SUCCESS)
    t.add_argument("--train-copy-margin", type=float, default=8.0)
    t.add_argument(
        "--train-args",
        default="",
        help='extra trainer flags, appended (write --train-args="--num_evals 29")',
    )
    d = p.add_argument_group("dagger")
    d.add_argument(
        "--dagger-teacher",
        default="auto",
        help="auto (a shipped/logged AlohaS2RPegInsertion teacher, else an untrained one), "
        "untrained, none (skip) or a policy file",
    )
    d.add_argument("--dagger-iterations", type=int, default=4)
    d.add_argument("--dagger-num-envs", type=int, default=1024)
    d.add_argument("--dagger-unroll", type=int, default=6, help="Playground's demo_length")
    d.add_argument("--dagger-buffer", type=int, default=100_000)
    d.add_argument("--dagger-batch", type=int, default=256)
    d.add_argument("--dagger-updates", type=int, default=96, help="4 epochs of 6,144 samples")
    d.add_argument("--dagger-update-unroll", type=int, default=8)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    return p


def apply_tiny(args) -> None:
    args.physics_batch, args.physics_steps, args.physics_repeats = [8, 16], 2, 2
    args.render_batch, args.render_steps, args.render_repeats = [8, 16], 1, 1
    args.render_extra_tiles, args.render_extra_res = [32], [48]
    args.dagger_num_envs, args.dagger_unroll, args.dagger_buffer = 8, 2, 256
    args.dagger_batch, args.dagger_updates, args.dagger_update_unroll = 8, 4, 2
    args.dagger_iterations = 2


def main() -> None:
    args = build_parser().parse_args()
    if args.tiny:
        apply_tiny(args)
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
