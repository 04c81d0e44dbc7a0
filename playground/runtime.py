"""Process-wide JAX settings: XLA flags for CPU speed and the persistent compilation cache.

Everything here must happen before JAX initialises its backend (the first computation), so
`playground/__init__.py` calls `configure()` on import. Flags the user already set win.

Why these flags: on CPU, XLA's fusion emitters turn MJX's kinematics tree pass into a pathological
loop; disabling them makes the physics step much faster and changes no result (the measurement is
in docs/cpu_performance.md).

Why the linear-algebra lowering: MJX factors the mass matrix (and the Newton solver's Hessian) with
`jax.scipy.linalg.cho_factor` every physics step. Under `vmap`, jaxlib lowers that on CPU to one
batched LAPACK call (`lapack_spotrf_ffi`) that splits the batch with `ParallelBatchMap` into tasks
on XLA's intra-op thread pool, then blocks the pool thread it runs on until they finish. When
XLA runs two such calls at once on a 2-core machine, both pool threads block waiting for tasks
that no free thread will ever run: the process hangs, idle (seen with gdb; it is the idle hang
users of MJX on CPU report, docs/cpu_performance.md). We lower those two primitives on CPU to code
that runs inside the calling thunk, with no nested parallelism (`playground.cpu_linalg`): unrolled
for the small matrices MJX factors, XLA's HLO ops for large ones.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CPU_XLA_FLAGS: tuple[str, ...] = ("--xla_cpu_use_fusion_emitters=false",)
DEFAULT_CACHE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "s2r_playground" / "jax"
)

_configured = False


def merge_xla_flags(existing: str, wanted: tuple[str, ...]) -> str:
    """Adds each wanted `--name=value` flag unless `existing` already sets that name."""
    flags = existing.split()
    names = {f.split("=", 1)[0] for f in flags}
    for flag in wanted:
        if flag.split("=", 1)[0] not in names:
            flags.append(flag)
    return " ".join(flags)


def cpu_xla_flags() -> tuple[str, ...]:
    """The flags of `CPU_XLA_FLAGS` that the installed jaxlib still knows.

    jaxlib 0.11 removed `--xla_cpu_use_fusion_emitters` (its CPU backend no longer has the old
    emitters), and XLA aborts the process at startup on a flag it does not know, while
    pyproject allows jaxlib up to 0.12. The version is read from the package metadata because
    importing jax here would start it before the flags are set.
    """
    return CPU_XLA_FLAGS if _jaxlib_older_than((0, 11)) else ()


def _jaxlib_older_than(version: tuple[int, ...]) -> bool:
    from importlib import metadata

    try:
        text = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:  # no jaxlib, no XLA to pass flags to
        return False
    parts = []
    for piece in text.split(".")[: len(version)]:
        digits = re.match(r"\d+", piece)  # "0rc1", "1.dev2025" and the like
        parts.append(int(digits.group()) if digits else 0)
    return tuple(parts) < version


def configure(cache_dir: str | os.PathLike | None = None) -> None:
    """Sets CPU XLA flags, the CPU linear-algebra lowering and the compilation cache (idempotent).

    Set `S2R_NO_XLA_FLAGS=1` to leave XLA_FLAGS untouched (for benchmarking the defaults),
    `S2R_LAPACK_ON_CPU=1` to keep jaxlib's LAPACK lowering, and `S2R_JAX_CACHE_DIR` to move the
    cache (`none` disables it).
    """
    global _configured
    if _configured:
        return
    _configured = True
    # mujoco picks its OpenGL backend when imported; without a display, GLFW cannot start, and
    # EGL (headless) is what rollout videos need. An explicit MUJOCO_GL wins.
    if not os.environ.get("DISPLAY") and "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"
    if os.environ.get("S2R_NO_XLA_FLAGS", "") not in ("1", "true"):
        os.environ["XLA_FLAGS"] = merge_xla_flags(os.environ.get("XLA_FLAGS", ""), cpu_xla_flags())
    if os.environ.get("S2R_LAPACK_ON_CPU", "") not in ("1", "true"):
        use_xla_linalg_on_cpu()
    cache = os.environ.get("S2R_JAX_CACHE_DIR") or cache_dir or DEFAULT_CACHE_DIR
    if str(cache).lower() == "none":
        return
    import jax

    Path(cache).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    # Cache even quick compiles: on 2 CPU cores many small jits add up across test processes.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def use_xla_linalg_on_cpu() -> bool:
    """Lowers Cholesky and triangular solve on CPU without batched LAPACK (see module doc)."""
    from playground import cpu_linalg

    return cpu_linalg.register_cpu_lowerings()


def cpu_description() -> str:
    """The processor's model name and whether it has AVX-512, e.g. "AMD EPYC 7B13 (no AVX-512)".

    XLA's CPU code, and with it the float rounding of MJX physics, depends on the instruction set,
    so measured figures and "deterministic" claims name the processor they hold on.
    """
    import platform

    name, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    if not flags:
        return name
    return f"{name} ({'AVX-512' if 'avx512f' in flags.split() else 'no AVX-512'})"
