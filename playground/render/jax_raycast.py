"""The pure-JAX ray caster: primitive geoms, Lambert shading, optional hard shadows.

No state and no dependency beyond JAX, so it fuses into the jitted env step on any device. One
primary ray per pixel through the pixel centre; intersections are analytic in each geom's frame
and only entering hits count (back faces are culled, as OpenGL and MuJoCo-Warp do, so a camera
inside a geom sees through it).

Why tiles: testing every pixel against every geom costs pixels x geoms, and most geoms cover no
part of a small wrist or stereo view. The image is cut into tiles. A tile's view is a pyramid
(four half-spaces through the camera, plus the one in front), and a convex geom meets a
half-space exactly when its centre lies within its support radius along the normal, which is
exact for every primitive here; a geom failing any of the five cannot be seen in the tile. Per
geom type, the largest number of candidates any tile has in the whole batch picks one of a few
compiled slot counts (0, 1, 2, 4, ... `max_per_tile`, or all) through one `lax.switch` at batch
level, and each tile's pixels are cast only at its candidates. A type nobody sees costs nothing;
a batch that would overflow the slots takes the all-geoms branch, so the output always equals
casting every geom. That is why `render` is a `custom_vmap` (see `base.Renderer`): under the
training wrapper's `vmap` it sees the batch, so the switch stays a real branch rather than a
`select` that computes every branch.

Why broadcast multiply-adds instead of `einsum` for the per-pixel transforms: XLA:CPU does not
fuse `dot_general`, and materialising the products was much slower (docs/rendering.md).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from playground.render.base import PRIMITIVE_TYPES, Frame, Images, Renderer, RenderSpec, to_uint8

_T = mujoco.mjtGeom
PLANE, SPHERE, CAPSULE = int(_T.mjGEOM_PLANE), int(_T.mjGEOM_SPHERE), int(_T.mjGEOM_CAPSULE)
ELLIPSOID, CYLINDER, BOX = int(_T.mjGEOM_ELLIPSOID), int(_T.mjGEOM_CYLINDER), int(_T.mjGEOM_BOX)
# Cast order; planes are never culled (they are unbounded or large and nearly always in view).
CAST_ORDER = (PLANE, BOX, CAPSULE, CYLINDER, SPHERE, ELLIPSOID)
DEFAULT_TILE = 16
DEFAULT_MAX_PER_TILE = 8
_INF = jnp.inf
_EPS = 1e-9


# ----- ray-primitive intersections, in the geom's frame -----
# Each takes origin `o` and direction `d` (3-tuples of broadcastable arrays) and the geom's size
# (a 3-tuple), and returns the ray parameter of the entering hit, +inf where there is none.


def _positive(t: jax.Array, hit: jax.Array) -> jax.Array:
    return jnp.where(hit & (t > 0.0), t, _INF)


def _hit_sphere_unit(o, d, r2):
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]
    c = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - r2
    disc = b * b - a * c
    t = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) / a
    return _positive(t, disc >= 0.0)


def _hit_sphere(o, d, size):
    return _hit_sphere_unit(o, d, size[0] * size[0])


def _hit_ellipsoid(o, d, size):
    # Scaling space by 1/size maps the ellipsoid to the unit sphere and keeps the ray parameter.
    o = tuple(o[i] / size[i] for i in range(3))
    d = tuple(d[i] / size[i] for i in range(3))
    return _hit_sphere_unit(o, d, 1.0)


def _cylinder_side(o, d, r, h):
    a = jnp.maximum(d[0] * d[0] + d[1] * d[1], _EPS)
    b = o[0] * d[0] + o[1] * d[1]
    c = o[0] * o[0] + o[1] * o[1] - r * r
    disc = b * b - a * c
    t = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) / a
    z = o[2] + t * d[2]
    return _positive(t, (disc >= 0.0) & (jnp.abs(z) <= h))


def _hit_capsule(o, d, size):
    # A capsule is a cylinder plus two spheres; the union's entry is the earliest entry of the
    # parts, and a ray entering through the flat end would meet the end sphere first.
    r, h = size[0], size[1]
    r2 = r * r
    side = _cylinder_side(o, d, r, h)
    top = _hit_sphere_unit((o[0], o[1], o[2] - h), d, r2)
    bottom = _hit_sphere_unit((o[0], o[1], o[2] + h), d, r2)
    return jnp.minimum(side, jnp.minimum(top, bottom))


def _hit_cylinder(o, d, size):
    r, h = size[0], size[1]
    side = _cylinder_side(o, d, r, h)
    # The only cap a ray can enter through faces against its direction.
    dz = jnp.where(jnp.abs(d[2]) < _EPS, _EPS, d[2])
    cap_z = jnp.where(dz < 0.0, h, -h)
    t = (cap_z - o[2]) / dz
    x, y = o[0] + t * d[0], o[1] + t * d[1]
    cap = _positive(t, x * x + y * y <= r * r)
    return jnp.minimum(side, cap)


def _hit_box(o, d, size):
    near, far = -_INF, _INF
    for i in range(3):
        di = jnp.where(jnp.abs(d[i]) < _EPS, _EPS, d[i])
        inv = 1.0 / di
        t1 = (-size[i] - o[i]) * inv
        t2 = (size[i] - o[i]) * inv
        near = jnp.maximum(near, jnp.minimum(t1, t2))
        far = jnp.minimum(far, jnp.maximum(t1, t2))
    return _positive(near, near <= far)


def _hit_plane(o, d, size):
    # Seen from above only (its +z side), like MuJoCo draws it; size 0 means unbounded.
    dz = jnp.where(d[2] < 0.0, d[2], -_EPS)
    t = -o[2] / dz
    x, y = o[0] + t * d[0], o[1] + t * d[1]
    inside_x = (size[0] <= 0.0) | (jnp.abs(x) <= size[0])
    inside_y = (size[1] <= 0.0) | (jnp.abs(y) <= size[1])
    return _positive(t, (o[2] > 0.0) & (d[2] < 0.0) & inside_x & inside_y)


_HIT = {
    PLANE: _hit_plane,
    SPHERE: _hit_sphere,
    CAPSULE: _hit_capsule,
    ELLIPSOID: _hit_ellipsoid,
    CYLINDER: _hit_cylinder,
    BOX: _hit_box,
}


def _local_normal(gtype, p, size):
    """Outward normal at local hit point `p` of a geom of (traced, per-pixel) type `gtype`."""
    x, y, z = p
    sx, sy, sz = size
    zero, one = jnp.zeros_like(x), jnp.ones_like(x)
    sphere = (x, y, z)
    ellipsoid = (x / (sx * sx), y / (sy * sy), z / (sz * sz))
    cz = jnp.clip(z, -sy, sy)
    capsule = (x, y, z - cz)
    on_cap = jnp.abs(jnp.abs(z) - sy) < jnp.abs(jnp.sqrt(x * x + y * y) - sx)
    cylinder = (
        jnp.where(on_cap, zero, x),
        jnp.where(on_cap, zero, y),
        jnp.where(on_cap, jnp.sign(z), zero),
    )
    ax, ay, az = jnp.abs(x) / sx, jnp.abs(y) / sy, jnp.abs(z) / sz
    bx = (ax >= ay) & (ax >= az)
    by = ~bx & (ay >= az)
    bz = ~bx & ~by
    box = (
        jnp.where(bx, jnp.sign(x), zero),
        jnp.where(by, jnp.sign(y), zero),
        jnp.where(bz, jnp.sign(z), zero),
    )
    plane = (zero, zero, one)
    out = []
    for i in range(3):
        v = plane[i]
        for t, n in (
            (SPHERE, sphere),
            (ELLIPSOID, ellipsoid),
            (CAPSULE, capsule),
            (CYLINDER, cylinder),
            (BOX, box),
        ):
            v = jnp.where(gtype == t, n[i], v)
        out.append(v)
    norm = jnp.sqrt(out[0] ** 2 + out[1] ** 2 + out[2] ** 2) + 1e-12
    return tuple(v / norm for v in out)


def _support_radius(t: int, na: jax.Array, size: jax.Array) -> jax.Array:
    """How far each geom reaches along unit normals: `na [..., n, 3]` = |normal . geom axis|.

    `size [n, 3]` is the geom's MuJoCo size. Exact for every primitive, so culling is tight.
    """
    s = [size[:, i] for i in range(3)]
    if t == SPHERE:
        return s[0] + 0.0 * na[..., 0]
    if t == ELLIPSOID:
        return jnp.sqrt(sum((s[i] * na[..., i]) ** 2 for i in range(3)))
    if t == BOX:
        return sum(s[i] * na[..., i] for i in range(3))
    if t == CAPSULE:
        return s[0] + s[1] * na[..., 2]
    if t == CYLINDER:
        return s[0] * jnp.sqrt(jnp.maximum(0.0, 1.0 - na[..., 2] ** 2)) + s[1] * na[..., 2]
    raise ValueError(f"no support radius for geom type {t}")


def _tile_layout(width: int, height: int, tile: int):
    """Pixel-centre ray directions (camera frame, z = -1) grouped by tile, and each tile's bounds.

    Returns u, v as `[T, P]` (T tiles, P pixels per tile; the last row/column of tiles is padded
    by repeating edge pixels), `bounds [T, 4]` (u0, u1, v0, v1 of the tile's pixel centres per
    unit tan(fovy/2)), and the (rows, cols) of tiles.
    """
    ty, tx = math.ceil(height / tile), math.ceil(width / tile)
    rows = np.minimum(np.arange(ty * tile), height - 1)
    cols = np.minimum(np.arange(tx * tile), width - 1)
    aspect = width / height
    # Pixel row 0 is the top of the image: v decreases down the rows.
    u_of_col = (2.0 * (cols + 0.5) / width - 1.0) * aspect
    v_of_row = 1.0 - 2.0 * (rows + 0.5) / height
    u = np.broadcast_to(u_of_col[None, :], (ty * tile, tx * tile))
    v = np.broadcast_to(v_of_row[:, None], (ty * tile, tx * tile))

    def by_tile(a):
        return a.reshape(ty, tile, tx, tile).transpose(0, 2, 1, 3).reshape(ty * tx, tile * tile)

    u_t, v_t = by_tile(u), by_tile(v)
    bounds = np.stack([u_t.min(1), u_t.max(1), v_t.min(1), v_t.max(1)], axis=1)
    return u_t.astype(np.float32), v_t.astype(np.float32), bounds.astype(np.float32), (ty, tx)


class JaxRenderer(Renderer):
    """Pure-JAX batch ray caster (see the module doc). `batch_size` is only a hint here."""

    name = "jax"

    def __init__(
        self,
        mj_model: mujoco.MjModel,
        spec: RenderSpec,
        batch_size: int = 1,
        tile: int = DEFAULT_TILE,
        max_per_tile: int = DEFAULT_MAX_PER_TILE,
    ):
        super().__init__(mj_model, spec, batch_size)
        scene = self.scene
        ids = np.flatnonzero(scene.visible)
        bad = [i for i in ids if scene.geom_type[i] not in PRIMITIVE_TYPES]
        if bad:
            names = [mj_model.geom(i).name or f"geom {i}" for i in bad]
            raise ValueError(
                f"The jax renderer casts rays at primitive geoms only; visible geoms {names} are "
                f"meshes or height fields. Hide them (geom_groups) or use backend 'warp'."
            )
        self._groups = {
            t: ids[scene.geom_type[ids] == t]
            for t in CAST_ORDER
            if np.any(scene.geom_type[ids] == t)
        }
        self.tile = int(tile)
        self.max_per_tile = int(max_per_tile)
        u, v, bounds, self._tiles = _tile_layout(spec.width, spec.height, self.tile)
        tan = np.tan(np.deg2rad(scene.cam_fovy_deg) / 2.0).astype(np.float32)  # [C]
        self._u = u[None] * tan[:, None, None]  # [C, T, P]
        self._v = v[None] * tan[:, None, None]
        self._bounds = bounds[None] * tan[:, None, None]  # [C, T, 4]
        self._light_active = np.flatnonzero(scene.light_active)

    # ----- batch level -----
    def _render_batch(self, frames: Frame) -> Images:
        cands = jax.vmap(self._candidates)(frames)
        n_cams, n_tiles, n_pix = self._u.shape
        batch = jax.tree_util.tree_leaves(frames)[0].shape[0]
        best = (
            jnp.full((batch, n_cams, n_tiles, n_pix), _INF),
            jnp.full((batch, n_cams, n_tiles, n_pix), -1, jnp.int32),
        )
        for t, ids in self._groups.items():
            if t == PLANE:
                best = jax.vmap(self._cast_type, in_axes=(None, 0, 0, None))(t, frames, best, None)
                continue
            mask, count = cands[t]
            levels = self._levels(len(ids))
            # The fewest slots that hold every tile's candidates anywhere in the batch.
            level = jnp.searchsorted(jnp.asarray(levels), jnp.max(count))
            branches = [self._cast_branch(t, k, len(ids)) for k in levels]
            best = jax.lax.switch(level, branches, frames, best, mask)
        return jax.vmap(self._shade)(frames, *best)

    def _levels(self, n: int) -> list[int]:
        """Slot counts compiled for a type of `n` geoms: 0, 1, 2, 4, ... up to `max_per_tile`, n."""
        levels, k = [0], 1
        while k < min(n, self.max_per_tile + 1):
            levels.append(k)
            k *= 2
        return sorted(set(levels + [n]))

    def _cast_branch(self, t: int, k: int, n: int):
        def skip(frames, best, mask):
            return best

        def cast_all(frames, best, mask):
            return jax.vmap(self._cast_type, in_axes=(None, 0, 0, None))(t, frames, best, None)

        def cast_culled(frames, best, mask):
            sel = self._select(mask, k)
            return jax.vmap(self._cast_type, in_axes=(None, 0, 0, 0))(t, frames, best, sel)

        return skip if k == 0 else cast_all if k == n else cast_culled

    # ----- one env -----
    def _cams(self, frame: Frame):
        return frame.cam_xpos, frame.cam_xmat  # [C, 3], [C, 3, 3]

    def _candidates(self, frame: Frame) -> dict[int, tuple[jax.Array, jax.Array]]:
        """Per culled type: which geoms may touch each tile `[C, T, n]`, and how many `[C, T]`.

        A tile's view is a pyramid: four half-spaces through the camera plus the half-space in
        front of it. A convex geom meets a half-space iff its centre lies within its support
        radius along the half-space's normal, so failing any one of the five proves it unseen.
        """
        cpos, cmat = self._cams(frame)
        b = jnp.asarray(self._bounds)  # [C, T, 4]
        u0, u1, v0, v1 = (b[..., i] for i in range(4))
        one, zero = jnp.ones_like(u0), jnp.zeros_like(u0)
        # Outward normals in the camera frame, [C, T, 5, 3] (unnormalised, scaled below).
        normals = jnp.stack(
            [
                jnp.stack([one, zero, u1], -1),
                jnp.stack([-one, zero, -u0], -1),
                jnp.stack([zero, one, v1], -1),
                jnp.stack([zero, -one, -v0], -1),
                jnp.stack([zero, zero, one], -1),
            ],
            axis=2,
        )
        normals = normals / jnp.linalg.norm(normals, axis=-1, keepdims=True)
        out = {}
        for t, ids in self._groups.items():
            if t == PLANE:
                continue
            rel = frame.geom_xpos[ids][None] - cpos[:, None]  # [C, n, 3]
            centre = jnp.einsum("cnj,cji->cni", rel, cmat)  # camera frame
            axes = jnp.einsum("cji,njk->cnik", cmat, frame.geom_xmat[ids])  # [C, n, 3, 3]
            dist = jnp.einsum("ctpi,cni->ctpn", normals, centre)  # [C, T, 5, n]
            na = jnp.einsum("ctpi,cnik->ctpnk", normals, axes)  # normal . geom axis k
            radius = _support_radius(t, jnp.abs(na), frame.geom_size[ids])
            mask = jnp.all(dist <= radius, axis=2)  # [C, T, n]
            out[t] = (mask, mask.sum(-1))
        return out

    @staticmethod
    def _select(mask: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
        """Indices (into the type's group) of the first `k` candidates per tile, and validity."""
        n = mask.shape[-1]
        score = jnp.where(mask, n - jnp.arange(n), 0)
        top, idx = jax.lax.top_k(score, k)
        return idx, top > 0

    def _cast_type(self, t: int, frame: Frame, best, sel):
        """Casts one env's pixels at the geoms of type `t`; keeps the nearer of that and `best`.

        `best`: (ray parameter = z-depth, geom id), `[C, T, P]` each. `sel`: the candidate slots
        of each tile (`_select`), or None for every geom of the type.
        """
        best_t, best_g = best
        ids = jnp.asarray(self._groups[t])
        u, v = jnp.asarray(self._u)[:, :, None], jnp.asarray(self._v)[:, :, None]  # [C, T, 1, P]
        n_cams, n_tiles = u.shape[:2]
        if sel is None:
            gid = jnp.broadcast_to(ids, (n_cams, n_tiles, len(ids)))
        else:
            idx, valid = sel
            gid = ids[idx]  # [C, T, K]
        cpos, cmat = self._cams(frame)
        xpos, xmat, size = frame.geom_xpos[gid], frame.geom_xmat[gid], frame.geom_size[gid]
        # Ray origin and direction in the geom's frame: o = M^T (p - x); d = (M^T R) (u, v, -1).
        rel = cpos[:, None, None] - xpos  # [C, T, K, 3]
        o = [jnp.sum(xmat[..., :, i] * rel, -1)[..., None] for i in range(3)]  # [C, T, K, 1]
        a = jnp.einsum("ctkji,cjl->ctkil", xmat, cmat)  # M^T R: [C, T, K, 3, 3]
        d = [a[..., i, 0, None] * u + a[..., i, 1, None] * v - a[..., i, 2, None] for i in range(3)]
        hit = _HIT[t](o, d, [size[..., i, None] for i in range(3)])  # [C, T, K, P]
        # Alpha 0 hides a geom at run time (visual randomisation, a parked object).
        shown = frame.geom_rgba[gid, 3] > 0.0
        if sel is not None:
            shown = shown & valid
        hit = jnp.where(shown[..., None], hit, _INF)
        k = jnp.argmin(hit, axis=2)
        tk = jnp.take_along_axis(hit, k[:, :, None], axis=2)[:, :, 0]
        gk = jnp.take_along_axis(gid, k, axis=2)
        closer = tk < best_t
        return jnp.where(closer, tk, best_t), jnp.where(closer, gk, best_g)

    def _cast(self, frame: Frame) -> tuple[jax.Array, jax.Array]:
        """Nearest hit's z-depth and geom id per pixel `[C, T, P]`, every geom cast (no culling)."""
        shape = self._u.shape
        best = (jnp.full(shape, _INF), jnp.full(shape, -1, jnp.int32))
        for t in self._groups:
            best = self._cast_type(t, frame, best, None)
        return best

    def geom_ids(self, frame: Frame) -> jax.Array:
        """Geom id seen at each pixel `[C, H, W]` (-1: none) of one env, by brute force."""
        return self._untile(self._cast(frame)[1])

    def _shade(self, frame: Frame, depth: jax.Array, gid: jax.Array) -> Images:
        spec, scene = self.spec, self.scene
        cpos, cmat = self._cams(frame)
        hit = jnp.isfinite(depth)
        g = jnp.maximum(gid, 0)
        t = jnp.where(hit, depth, 0.0)
        u, v = jnp.asarray(self._u), jnp.asarray(self._v)  # [C, T, P]
        # World ray direction R (u, v, -1), and the hit point in the winning geom's frame.
        dw = [
            cmat[:, i, 0, None, None] * u
            + cmat[:, i, 1, None, None] * v
            - cmat[:, i, 2, None, None]
            for i in range(3)
        ]
        pw = [cpos[:, i, None, None] + t * dw[i] for i in range(3)]
        xpos, xmat, size = frame.geom_xpos[g], frame.geom_xmat[g], frame.geom_size[g]
        rel = [pw[i] - xpos[..., i] for i in range(3)]
        p = [sum(xmat[..., j, i] * rel[j] for j in range(3)) for i in range(3)]
        nl = _local_normal(jnp.asarray(scene.geom_type)[g], p, [size[..., i] for i in range(3)])
        n = [sum(xmat[..., i, j] * nl[j] for j in range(3)) for i in range(3)]
        # Lambert: ambient, a headlight along the view axis, and each directional light.
        light = jnp.asarray(scene.ambient)[:, None, None, None] * jnp.ones_like(t)
        view = [-cmat[:, i, 2, None, None] for i in range(3)]
        head = jnp.maximum(0.0, -(n[0] * view[0] + n[1] * view[1] + n[2] * view[2]))
        light = light + jnp.asarray(scene.headlight_diffuse)[:, None, None, None] * head
        for li in self._light_active:
            ld = frame.light_dir[li]
            lam = jnp.maximum(0.0, -(n[0] * ld[0] + n[1] * ld[1] + n[2] * ld[2]))
            if spec.shadows:
                lam = lam * self._lit(frame, pw, n, ld)
            light = light + frame.light_diffuse[li][:, None, None, None] * lam
        light = light * frame.brightness
        rgba = frame.geom_rgba[g]  # [C, T, P, 4]
        color = jnp.moveaxis(rgba[..., :3], -1, 0) * light  # [3, C, T, P]
        bg = jnp.asarray(spec.background, jnp.float32)[:, None, None, None]
        color = jnp.where(hit, color, bg)
        return Images(rgb=to_uint8(self._untile(jnp.moveaxis(color, 0, -1))), depth=self._untile(t))

    def _lit(self, frame: Frame, pw, n, light_dir) -> jax.Array:
        """1 where nothing blocks the way from the hit point towards the light, else 0."""
        origin = [pw[i] + 1e-4 * n[i] for i in range(3)]
        blocked = jnp.zeros(origin[0].shape, bool)
        for t, ids in self._groups.items():
            for g in ids:
                xpos, xmat = frame.geom_xpos[g], frame.geom_xmat[g]
                rel = [origin[i] - xpos[i] for i in range(3)]
                o = [sum(xmat[j, i] * rel[j] for j in range(3)) for i in range(3)]
                d = [-sum(xmat[j, i] * light_dir[j] for j in range(3)) for i in range(3)]
                size = [frame.geom_size[g, i] for i in range(3)]
                blocked = blocked | jnp.isfinite(_HIT[t](o, d, size))
        return jnp.where(blocked, 0.0, 1.0)

    def _untile(self, x: jax.Array) -> jax.Array:
        """[C, T, P, ...] tiles back to [C, H, W, ...] images."""
        ty, tx = self._tiles
        s, spec = self.tile, self.spec
        c = x.shape[0]
        x = x.reshape(c, ty, tx, s, s, *x.shape[3:])
        x = jnp.swapaxes(x, 2, 3).reshape(c, ty * s, tx * s, *x.shape[5:])
        return x[:, : spec.height, : spec.width]
