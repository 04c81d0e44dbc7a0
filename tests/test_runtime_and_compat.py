"""Process settings (XLA flags, compilation cache) and the brax/jax compatibility layer."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from playground import compat, runtime


def test_merge_xla_flags_keeps_user_values():
    merged = runtime.merge_xla_flags(
        "--xla_cpu_use_fusion_emitters=true --foo=1",
        ("--xla_cpu_use_fusion_emitters=false", "--bar=2"),
    )
    assert merged.split() == ["--xla_cpu_use_fusion_emitters=true", "--foo=1", "--bar=2"]


def test_import_sets_cpu_flag_and_cache():
    for flag in runtime.cpu_xla_flags():
        assert flag.split("=", 1)[0] in os.environ.get("XLA_FLAGS", "")
    assert jax.config.jax_compilation_cache_dir


def test_fusion_emitter_flag_only_for_jaxlib_that_knows_it(monkeypatch):
    from importlib import metadata

    for version, expected in (("0.10.2", True), ("0.11.0", False), ("0.12.0rc1", False)):
        monkeypatch.setattr(metadata, "version", lambda name, v=version: v)
        assert bool(runtime.cpu_xla_flags()) is expected, version


def test_device_put_replicated_matches_removed_api():
    x = {"a": jnp.arange(3.0), "b": np.float32(2.0)}
    out = compat.device_put_replicated(x, jax.local_devices())
    n = len(jax.local_devices())
    assert out["a"].shape == (n, 3) and out["b"].shape == (n,)
    np.testing.assert_array_equal(out["a"][0], np.arange(3.0))
    # pmap consumes it, as brax's trainers do.
    np.testing.assert_array_equal(jax.pmap(lambda t: t["a"] + t["b"])(out)[0], np.arange(3.0) + 2)


def test_ensure_brax_compat_installs_only_when_missing(monkeypatch):
    monkeypatch.delattr(jax, "device_put_replicated", raising=False)
    if compat.jax_has_device_put_replicated():  # jax still serves it through its module getattr
        return
    assert compat.ensure_brax_compat() is True
    assert jax.device_put_replicated is compat.device_put_replicated
    assert compat.ensure_brax_compat() is False
    from brax.training import pmap

    out = pmap.bcast_local_devices(jnp.ones(2), jax.local_device_count())
    assert out.shape == (jax.local_device_count(), 2)


def test_replication_over_two_host_devices():
    """brax's pmap helpers over 2 devices, in a fresh process (device count is fixed at start)."""
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp
        from playground import compat
        compat.ensure_brax_compat()
        from brax.training import pmap
        assert jax.local_device_count() == 2, jax.devices()
        x = pmap.bcast_local_devices({"w": jnp.arange(4.0)}, 2)
        assert x["w"].shape == (2, 4)
        assert {s.device for s in x["w"].addressable_shards} == set(jax.local_devices())
        y = jax.pmap(lambda t: jax.lax.psum(t["w"].sum(), "i"), axis_name="i")(x)
        assert float(y[0]) == 12.0, y
        print("ok")
        """
    )
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", S2R_JAX_CACHE_DIR="none"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok" in result.stdout
