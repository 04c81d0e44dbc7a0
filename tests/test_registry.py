"""Registry and config errors: bad input fails loudly and says what is valid."""

import pytest

from playground import registry


def test_all_envs_listed():
    assert set(registry.ALL_ENVS) >= {"AlohaS2RPick", "AlohaS2RPegInsertion"}


def test_unknown_env_lists_valid_names():
    with pytest.raises(KeyError) as e:
        registry.load("AlohaPick")
    msg = str(e.value)
    assert "AlohaS2RPick" in msg and "AlohaS2RPegInsertion" in msg and "Did you mean" in msg
    with pytest.raises(KeyError, match="Valid names"):
        registry.get_default_config("Nope")
    with pytest.raises(KeyError, match="Valid names"):
        registry.get_domain_randomizer("Nope")


def test_unknown_override_key_names_it():
    with pytest.raises(KeyError, match=r"'obs_noise.qpos_deg'"):
        registry.load("AlohaS2RPick", config_overrides={"obs_noise.qpos_deg": 1.0})
    with pytest.raises(KeyError, match=r"'episode_len'"):
        registry.load("AlohaS2RPick", config_overrides={"episode_len": 10})


def test_overrides_apply_dotted_and_nested():
    env = registry.load(
        "AlohaS2RPick", config_overrides={"episode_length": 50, "obs_noise": {"qpos_rad": 0.0}}
    )
    assert env.config.episode_length == 50
    assert env.config.obs_noise.qpos_rad == 0.0
    assert registry.get_default_config("AlohaS2RPick").episode_length == 160  # default untouched


def test_bad_timing_and_impl_rejected():
    with pytest.raises(ValueError, match="multiple of sim_dt"):
        registry.load("AlohaS2RPick", config_overrides={"ctrl_dt": 0.0123})
    with pytest.raises(ValueError, match="Unknown physics impl"):
        registry.load("AlohaS2RPick", config_overrides={"impl": "cuda"})


def test_warp_loads_where_installed_and_explains_where_not(monkeypatch):
    from playground import physics

    assert registry.load("AlohaS2RPick", config_overrides={"impl": "warp"}).impl == "warp"
    # Where warp-lang is missing (the lent GPUs), asking for it says why and what is available.
    monkeypatch.setattr(physics, "available_impls", lambda: ["jax"])
    monkeypatch.setattr("playground.physics.mjx.available_impls", lambda: ["jax"])
    with pytest.raises(ValueError, match=r"warp-lang.*Available here: \['jax'\]"):
        registry.load("AlohaS2RPick", config_overrides={"impl": "warp"})


def test_timing_properties():
    env = registry.load("AlohaS2RPick")
    assert env.ctrl_dt == pytest.approx(0.05) and env.sim_dt == pytest.approx(0.005)
    assert env.n_substeps == 10
    assert env.mj_model.opt.timestep == pytest.approx(0.005)
