"""`impl="native"`: the batch's physics steps run in MuJoCo's C engine, called from jitted code.

Why: on a CPU, MuJoCo C steps our scenes far faster than MJX-JAX (docs/cpu_performance.md), so
teachers can train without a GPU. The env API stays the same: `MjxEnv.physics_step` hands the
batch to `NativePhysics.step`, which returns an `mjx.Data` as `mjx.step` would.

Design:
- One host callback per control step for the whole batch. `jax.pure_callback` with
  `vmap_method="expand_dims"` gives the callback every env of a `vmap` (nested vmaps too) in one
  call; inputs that are not batched arrive with size-1 leading axes and are broadcast on the host.
- The C side is `mujoco.batch.Batch` (MuJoCo >= 4): simulations stored as state rows, stepped on
  a thread pool (`nthread` threads including the caller's; bit-identical results at any count).
  Every call writes the whole state from JAX (time, qpos, qvel, act, warmstart, ctrl, applied
  forces, mocap poses, ...), runs `n_substeps` `mj_step`s per env with ctrl held, and reads back
  the new integration state plus every derived field `mjx.Data` exposes (poses of bodies, geoms,
  sites and cameras, com quantities, forces, sensordata). Those derived fields come from the
  forward pass of the last substep, i.e. they describe the state before the last integration,
  exactly as after `mjx.step`, so observations and rewards have the same meaning as with `jax`.
  Copying them out of C costs far less than recomputing kinematics in JAX.
- Not returned: MJX's implementation-private fields (`data._impl`: contacts, constraint rows,
  mass matrix). No task reads them after a step; they keep their previous values.
- Domain randomisation: a model leaf that differs from the env's compiled model (a traced,
  per-env value under `vmap`, or a replaced constant) is passed to the callback and written into
  that simulation's copy of the field (`Batch.expand`), only when it changed since the last call.
  Derived constants stay as compiled, as MJX leaves them too, except two that C reads where MJX
  computes from the fields themselves: subtree masses (for the centres of mass) and the bodies'
  bounding-volume trees (C's collision culling; a grown geom would otherwise lose contacts).
  Fields that MuJoCo cannot hold per simulation (sizes, names, MJX-only caches) always come from
  the compiled model.
- A simulation that diverges is reset by MuJoCo (bad qpos/qvel/qacc warnings); we return NaN for
  it instead, as MJX would, so each task's instability check ends its episode.
- `forward` does the same for `mj_forward` (derived fields of the current state, no step):
  `MjxEnv.forward` uses it, several times cheaper than MJX-JAX's collision and constraint passes.
- float64 (x64) crosses the callback as uint32 pairs, as the callback's thread may not see a
  `jax.enable_x64` context and would otherwise narrow it.
- Gradients: none. A `custom_jvp` whose rule raises says so at trace time.
- Threads: `S2R_NATIVE_THREADS` if set, else the CPUs this process may run on. Calls from
  several devices (pmap) or threads at once each take their own `Batch` from a pool.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

NTHREAD_ENV = "S2R_NATIVE_THREADS"

GRAD_ERROR = (
    'Gradients through physics are not supported with impl="native" (MuJoCo C runs in a host '
    'callback). Use impl="jax" to differentiate through the simulator.'
)

# mj_step's own divergence checks reset the simulation to the model defaults and warn.
_DIVERGENCE_WARNINGS = [
    int(mujoco.mjtWarning.mjWARN_BADQPOS),
    int(mujoco.mjtWarning.mjWARN_BADQVEL),
    int(mujoco.mjtWarning.mjWARN_BADQACC),
]
# The mjSTATE_INTEGRATION components that mj_step changes, by their mjx.Data name.
_STEPPED = ("time", "qpos", "qvel", "act", "history", "qacc_warmstart", "plugin_state")
# Model fields that place geoms' boxes in their bodies' frames: the bodies' BVH depends on them.
_BVH_INPUTS = frozenset({"geom_aabb", "geom_pos", "geom_quat", "body_ipos", "body_iquat"})
# Derived by mj_inverse, not by mj_step: holds another simulation's value after a batch step.
_NOT_STEPPED = ("qfrc_inverse",)


def is_available() -> bool:
    """MuJoCo's batch API (MuJoCo >= 4) is importable."""
    try:
        from mujoco import batch  # noqa: F401
    except ImportError:
        return False
    return True


def default_nthread() -> int:
    """`S2R_NATIVE_THREADS`, else the number of CPUs this process may run on (its affinity)."""
    value = os.environ.get(NTHREAD_ENV)
    if value:
        n = int(value)
        if n < 1:
            raise ValueError(f"{NTHREAD_ENV} must be a positive integer, got {value!r}")
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class _Slot:
    """A state component's mjx.Data field and its columns in a Batch state row."""

    name: str
    start: int
    size: int


class _Sim:
    """One `mujoco.batch.Batch` of `nsim` simulations and the per-simulation model values it
    holds, so that unchanged values (a training run's fixed randomisation) are not rewritten."""

    def __init__(self, mj_model: mujoco.MjModel, nsim: int, nthread: int, outputs: list[str]):
        from mujoco import batch as mjb

        self.model = mj_model
        self.batch = mjb.Batch(mj_model, nsim=nsim, nthread=nthread)
        self.nsim = nsim
        # A field is copied out by the calls after it is bound, so bind before the first step.
        self.outputs = [self.batch.bind(name) for name in outputs]
        self.written: dict[str, np.ndarray] = {}  # field -> (nsim, size) rows last written
        self._expanded: dict[str, np.ndarray] = {}

    def field(self, name: str) -> np.ndarray:
        """The live (nsim, size) per-simulation storage of a model field."""
        if name not in self._expanded:
            self._expanded[name] = self.batch.expand(name).reshape(self.nsim, -1)
        return self._expanded[name]

    def values(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A model field's per-simulation values as (nsim, *shape), expanded or not."""
        if name in self._expanded:
            return self._expanded[name].reshape(self.nsim, *shape)
        return np.broadcast_to(np.asarray(getattr(self.model, name)), (self.nsim, *shape))

    def set_fields(self, rows: dict[str, np.ndarray]) -> None:
        """Per-simulation values for the fields in `rows`; every other field the model's own."""
        changed = set()
        for name, r in rows.items():
            last = self.written.get(name)
            if last is None or not np.array_equal(last, r):
                self.field(name)[...] = r
                self.written[name] = np.array(r)
                changed.add(name)
        for name in set(self.written) - set(rows):
            self.field(name)[...] = np.ravel(np.asarray(_model_leaf_mj(self.model, name)))
            del self.written[name]
            changed.add(name)
        # Constants that mj_setConst derives and the C step reads, while MJX computes them from
        # the fields themselves: recompute them, leaving every other constant as MJX sees it.
        if "body_mass" in changed:
            self._subtree_mass()
        if changed & _BVH_INPUTS:
            self._refit_bvh()

    def _subtree_mass(self) -> None:
        """body_subtreemass, which C's mj_comPos divides by (MJX sums the masses each step)."""
        m = self.model
        sub = np.array(self.values("body_mass", (m.nbody,)))
        for i in range(m.nbody - 1, 0, -1):
            sub[:, m.body_parentid[i]] += sub[:, i]
        self.field("body_subtreemass")[...] = sub

    def _refit_bvh(self) -> None:
        """Bodies' bounding-volume trees from their geoms' current boxes and poses.

        C's midphase culls body pairs with the boxes the compiler built; a geom grown by
        randomisation would lose contacts outside its compiled box. MJX has no such culling.
        Leaves are geom boxes in the body's inertial frame, inner nodes the union of children.
        """
        m = self.model
        n = self.nsim
        aabb = self.values("geom_aabb", (m.ngeom, 6))
        gpos = self.values("geom_pos", (m.ngeom, 3))
        gmat = _quat_to_mat(self.values("geom_quat", (m.ngeom, 4)))
        ipos = self.values("body_ipos", (m.nbody, 3))
        imat = _quat_to_mat(self.values("body_iquat", (m.nbody, 4)))
        bvh = self.field("bvh_aabb").reshape(n, -1, 6)
        for body in range(m.nbody):
            adr, num = m.body_bvhadr[body], m.body_bvhnum[body]
            if adr < 0:
                continue
            # Children follow their parent, so a reverse sweep visits them first.
            for k in range(adr + num - 1, adr - 1, -1):
                children = [adr + c for c in m.bvh_child[k] if c >= 0]
                if children:
                    lo = np.min([bvh[:, c, :3] - bvh[:, c, 3:] for c in children], axis=0)
                    hi = np.max([bvh[:, c, :3] + bvh[:, c, 3:] for c in children], axis=0)
                    bvh[:, k, :3], bvh[:, k, 3:] = (lo + hi) / 2, (hi - lo) / 2
                    continue
                g = m.bvh_nodeid[k]
                rot_t = np.swapaxes(imat[:, body], 1, 2)
                rel = np.einsum("nij,njk->nik", rot_t, gmat[:, g])
                offset = gpos[:, g] - ipos[:, body]
                bvh[:, k, :3] = np.einsum("nij,nj->ni", rot_t, offset) + np.einsum(
                    "nij,nj->ni", rel, aabb[:, g, :3]
                )
                bvh[:, k, 3:] = np.einsum("nij,nj->ni", np.abs(rel), aabb[:, g, 3:])


class NativePhysics:
    """Steps batches of one compiled model in MuJoCo C from inside jitted JAX code.

    `mjx_model` is the env's compiled MJX model: leaves of the model passed to `step` that are
    this model's own arrays cost nothing; others reach C per simulation.
    """

    def __init__(self, mj_model: mujoco.MjModel, mjx_model: mjx.Model, nthread: int | None = None):
        from mujoco import batch as mjb

        # Our own copy: tests and scripts edit an env's MjModel in place for native MuJoCo runs.
        self._mj_model = copy.deepcopy(mj_model)
        self._reference = mjx_model
        self.nthread = int(nthread) if nthread else default_nthread()
        m = self._mj_model
        template = mjx.make_data(mjx_model, impl="jax")

        # State rows hold the mjSTATE_INTEGRATION components in mj_getState order (bit order).
        self._inputs: list[_Slot] = []
        start = 0
        spec = int(mujoco.mjtState.mjSTATE_INTEGRATION)
        by_bit = {v: k for k, v in _state_field_names().items()}
        for bit in range(int(mujoco.mjtState.mjNSTATE)):
            if not spec & (1 << bit):
                continue
            size = mujoco.mj_stateSize(m, 1 << bit)
            name = by_bit.get(1 << bit)
            if size and (name is None or not hasattr(template, name)):
                raise ValueError(
                    f"impl='native' cannot carry state component {mujoco.mjtState(1 << bit)} "
                    f"({size} values) of this model in mjx.Data; use impl='jax'."
                )
            if size:
                self._inputs.append(_Slot(name, start, size))
            start += size
        self._nstate = start  # checked against each Batch: the row layout is assumed above
        self._outputs_state = [s for s in self._inputs if s.name in _STEPPED]

        # Every public derived field of mjx.Data that a batch step computes and can copy out.
        public = [f.name for f in dataclasses.fields(template) if not f.name.startswith("_")]
        state_names = set(_state_field_names())
        mj_data = mujoco.MjData(m)
        self._outputs_derived: list[str] = []
        for name in public:
            if name in state_names or name in _NOT_STEPPED or name not in mjb.DATA_FIELDS:
                continue
            size = int(np.size(getattr(template, name)))
            if size and size == np.size(getattr(mj_data, name)):
                self._outputs_derived.append(name)

        # Model fields that can differ per simulation, by their mjx.Model name ("opt.gravity"
        # for options): array leaves that the batch can expand, with MjModel's number of values.
        names = [f.name for f in dataclasses.fields(mjx_model)]
        names += ["opt." + f.name for f in dataclasses.fields(mjx_model.opt)]
        self._fields: list[str] = []
        for name in names:
            leaf = _model_leaf(mjx_model, name)
            if name not in mjb.MODEL_FIELDS or not isinstance(leaf, (jax.Array, np.ndarray)):
                continue
            size = np.size(leaf)
            if size and size == np.size(_model_leaf_mj(m, name)):
                self._fields.append(name)

        self._pool: dict[int, list[_Sim]] = {}
        self._lock = threading.Lock()

    # ----- JAX side -----
    def step(self, model: mjx.Model, data: mjx.Data, n_substeps: int) -> mjx.Data:
        """`n_substeps` physics steps of `data` (ctrl already set) on `model`; any vmap depth."""
        if n_substeps < 1:
            raise ValueError(f"n_substeps must be >= 1, got {n_substeps}")
        return self._call(model, data, int(n_substeps))

    def forward(self, model: mjx.Model, data: mjx.Data) -> mjx.Data:
        """`mj_forward` in C: every derived field of `data` at its current state, as
        `mjx.forward` computes them (a reset's poses and sensors), without stepping."""
        return self._call(model, data, 0)

    def _call(self, model: mjx.Model, data: mjx.Data, nstep: int) -> mjx.Data:
        changed = self._changed_fields(model)
        inputs = [getattr(data, s.name) for s in self._inputs]
        inputs += [_model_leaf(model, name) for name in changed]
        out_names = [s.name for s in self._outputs_state] + self._outputs_derived
        out_meta = tuple(
            (tuple(jnp.shape(getattr(data, n))), np.dtype(getattr(data, n).dtype))
            for n in out_names
        )
        host = functools.partial(
            self._host_step,
            nstep,
            tuple(changed),
            tuple(jnp.ndim(x) for x in inputs),
            tuple(_is_wide(x) for x in inputs),
            out_meta,
        )
        out_specs = tuple(
            jax.ShapeDtypeStruct((*shape, 2), jnp.uint32)
            if dtype == np.float64
            else jax.ShapeDtypeStruct(shape, dtype)
            for shape, dtype in out_meta
        )

        @jax.custom_jvp
        def call(args):
            return jax.pure_callback(host, out_specs, args, vmap_method="expand_dims")

        @call.defjvp
        def _no_gradients(primals, tangents):
            raise NotImplementedError(GRAD_ERROR)

        out = call(tuple(_to_bits(x) if _is_wide(x) else x for x in inputs))
        out = [
            jax.lax.bitcast_convert_type(x, jnp.float64) if dtype == np.float64 else x
            for x, (_, dtype) in zip(out, out_meta, strict=True)
        ]
        return data.replace(**dict(zip(out_names, out, strict=True)))

    def _changed_fields(self, model: mjx.Model) -> list[str]:
        """Fields whose value may differ from the compiled model's (decided at trace time)."""
        changed = []
        for name in self._fields:
            leaf, ref = _model_leaf(model, name), _model_leaf(self._reference, name)
            if leaf is ref:
                continue
            if isinstance(leaf, jax.core.Tracer) or not np.array_equal(
                np.asarray(leaf), np.asarray(ref)
            ):
                changed.append(name)
        return changed

    # ----- host side -----
    def _host_step(
        self,
        nstep: int,
        field_names: Sequence[str],
        core_ndim: Sequence[int],
        wide: Sequence[bool],
        out_meta: Sequence[tuple[tuple[int, ...], np.dtype]],
        args: Sequence[np.ndarray],
    ) -> tuple[np.ndarray, ...]:
        arrays = [_from_bits(a) if w else np.asarray(a) for a, w in zip(args, wide, strict=True)]
        # expand_dims puts one leading axis per vmap level on every input, size 1 where unbatched.
        lead = [a.shape[: a.ndim - nd] for a, nd in zip(arrays, core_ndim, strict=True)]
        batch_shape = np.broadcast_shapes(*lead)
        n = math.prod(batch_shape)
        state, fields = arrays[: len(self._inputs)], arrays[len(self._inputs) :]
        sim = self._acquire(n)
        try:
            rows = sim.batch.state
            for slot, x in zip(self._inputs, state, strict=True):
                rows[:, slot.start : slot.start + slot.size] = _rows(x, batch_shape, n)
            sim.set_fields(
                {
                    name: _rows(x, batch_shape, n)
                    for name, x in zip(field_names, fields, strict=True)
                }
            )
            sim.batch.warning[...] = 0
            if nstep:
                sim.batch.step(nstep=nstep)
            else:
                sim.batch.forward()
            diverged = sim.batch.warning[:, _DIVERGENCE_WARNINGS, 1].sum(axis=1) > 0
            values = [rows[:, s.start : s.start + s.size] for s in self._outputs_state]
            values += sim.outputs
            names = [s.name for s in self._outputs_state] + self._outputs_derived
            out = []
            for name, v, (core, dtype) in zip(names, values, out_meta, strict=True):
                v = np.array(v, dtype=dtype).reshape(n, -1)
                if diverged.any() and name != "time" and np.issubdtype(dtype, np.floating):
                    v[diverged] = np.nan
                v = v.reshape((*batch_shape, *core))
                out.append(v[..., None].view(np.uint32) if dtype == np.float64 else v)
            return tuple(out)
        finally:
            self._release(sim)

    def _acquire(self, nsim: int) -> _Sim:
        with self._lock:
            free = self._pool.setdefault(nsim, [])
            if free:
                return free.pop()
        sim = _Sim(self._mj_model, nsim, self.nthread, self._outputs_derived)
        if sim.batch.nstate != self._nstate:
            raise RuntimeError(
                f"MuJoCo's batch state rows hold {sim.batch.nstate} values, not the "
                f"{self._nstate} of mjSTATE_INTEGRATION this module lays out"
            )
        return sim

    def _release(self, sim: _Sim) -> None:
        with self._lock:
            self._pool[sim.nsim].append(sim)


def _rows(x: np.ndarray, batch_shape: tuple[int, ...], n: int) -> np.ndarray:
    """An input with one leading axis per vmap level (size 1 if unbatched) as (n, size) rows."""
    x = np.asarray(x)
    return np.broadcast_to(x, (*batch_shape, *x.shape[len(batch_shape) :])).reshape(n, -1)


def _is_wide(x: Any) -> bool:
    return jnp.result_type(x) == jnp.float64


def _to_bits(x: jax.Array) -> jax.Array:
    """float64 as uint32 pairs: a host callback canonicalises dtypes with the x64 setting of
    the XLA thread it runs on, which a `jax.enable_x64` context does not reach."""
    return jax.lax.bitcast_convert_type(x, jnp.uint32)


def _from_bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.float64)[..., 0]


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of unit quaternions (..., 4) in MuJoCo's (w, x, y, z)."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def _model_leaf(model: mjx.Model, name: str) -> Any:
    if name.startswith("opt."):
        return getattr(model.opt, name[4:])
    return getattr(model, name)


def _model_leaf_mj(model: mujoco.MjModel, name: str) -> Any:
    if name.startswith("opt."):
        return getattr(model.opt, name[4:])
    return getattr(model, name)


@functools.cache
def _state_field_names() -> dict[str, int]:
    """mjx.Data field name -> its mjtState bit, for the mjSTATE_INTEGRATION components."""
    s = mujoco.mjtState
    return {
        "time": int(s.mjSTATE_TIME),
        "qpos": int(s.mjSTATE_QPOS),
        "qvel": int(s.mjSTATE_QVEL),
        "act": int(s.mjSTATE_ACT),
        "history": int(s.mjSTATE_HISTORY),
        "qacc_warmstart": int(s.mjSTATE_WARMSTART),
        "ctrl": int(s.mjSTATE_CTRL),
        "qfrc_applied": int(s.mjSTATE_QFRC_APPLIED),
        "xfrc_applied": int(s.mjSTATE_XFRC_APPLIED),
        "eq_active": int(s.mjSTATE_EQ_ACTIVE),
        "mocap_pos": int(s.mjSTATE_MOCAP_POS),
        "mocap_quat": int(s.mjSTATE_MOCAP_QUAT),
        "userdata": int(s.mjSTATE_USERDATA),
        "plugin_state": int(s.mjSTATE_PLUGIN),
    }
