"""The pixel student's parts and DAgger's building blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from playground.networks.student import Student, init_from_pretrained, pool_depth, pose_loss
from playground.training import dagger

OBS = {
    "rgb": jnp.zeros((5, 2, 32, 32, 3), jnp.uint8),
    "depth": jnp.full((5, 2, 32, 32), 0.3, jnp.float32),
    "proprio": jnp.zeros((5, 24), jnp.float32),
}


@pytest.fixture(scope="module")
def student_and_params():
    student = Student(action_size=3, use_rgb=True, use_depth=True, features=32, hidden=(16,))
    return student, student.init(jax.random.PRNGKey(0), OBS)


def test_student_outputs(student_and_params):
    student, params = student_and_params
    obs = dict(
        OBS,
        rgb=jax.random.randint(jax.random.PRNGKey(1), OBS["rgb"].shape, 0, 256).astype(jnp.uint8),
    )
    action, pose = student.apply(params, obs)
    assert action.shape == (5, 3) and pose.shape == (5, 7)
    assert np.all(np.abs(np.asarray(action)) <= 1.0)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(pose[:, 3:]), axis=-1), 1.0, atol=1e-4)
    # One encoder shared by the cameras: its kernel has one camera's input channels.
    assert params["params"]["rgb_encoder"]["Conv_0"]["kernel"].shape[-2] == 3
    assert params["params"]["depth_encoder"]["Conv_0"]["kernel"].shape[-2] == 1


def test_init_from_pretrained_checks_shapes(student_and_params):
    _, params = student_and_params
    enc = jax.tree.map(jnp.ones_like, params["params"]["rgb_encoder"])
    out, fresh = init_from_pretrained(params, enc)
    assert fresh == ()
    assert all(np.all(np.asarray(x) == 1) for x in jax.tree.leaves(out["params"]["rgb_encoder"]))
    wrong = jax.tree.map(lambda x: jnp.ones((*x.shape[:-1], x.shape[-1] + 1)), enc)
    with pytest.raises(ValueError, match="do not match"):
        init_from_pretrained(params, wrong)


def test_pretrained_convolutions_transfer_to_larger_images():
    """A 48x48 student takes the 32x32 encoder's convolutions; its dense layer stays fresh."""
    student = Student(action_size=3, use_rgb=True, features=32, hidden=(16,))
    obs = {"rgb": jnp.zeros((1, 48, 48, 3), jnp.uint8), "proprio": jnp.zeros((24,))}
    params = student.init(jax.random.PRNGKey(0), obs)
    obs32 = dict(obs, rgb=jnp.zeros((1, 32, 32, 3), jnp.uint8))
    enc32 = student.init(jax.random.PRNGKey(1), obs32)["params"]["rgb_encoder"]
    out, fresh = init_from_pretrained(params, enc32)
    assert fresh == ("Dense_0",)
    enc = out["params"]["rgb_encoder"]
    np.testing.assert_array_equal(enc["Conv_0"]["kernel"], enc32["Conv_0"]["kernel"])
    np.testing.assert_array_equal(
        enc["Dense_0"]["kernel"], params["params"]["rgb_encoder"]["Dense_0"]["kernel"]
    )
    action, _ = student.apply(out, obs)
    assert action.shape == (3,)


def test_pose_loss_is_sign_invariant_for_quaternions():
    q = jnp.array([[0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]])
    flipped = q.at[:, 3:].multiply(-1.0)
    assert float(pose_loss(q, flipped)) < 1e-6
    other = jnp.array([[0.1, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    assert float(pose_loss(q, other)) == pytest.approx(0.01 + 0.5, abs=1e-5)


def test_frozen_encoder_does_not_move(student_and_params):
    _, params = student_and_params
    cfg = dagger.default_config()
    cfg.freeze_encoder = True
    opt = dagger.make_optimizer(cfg)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    for a, b in zip(
        jax.tree.leaves(params["params"]["rgb_encoder"]),
        jax.tree.leaves(new["params"]["rgb_encoder"]),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(params["params"]["fusion_0"]),
            jax.tree.leaves(new["params"]["fusion_0"]),
            strict=True,
        )
    ]
    assert all(moved)


def test_random_shift_moves_whole_images_within_the_pad():
    img = jnp.zeros((64, 2, 8, 8, 1)).at[:, :, 4, 4, 0].set(1.0)
    out = np.asarray(dagger.random_shift(img, jax.random.PRNGKey(0), 2))
    assert out.shape == img.shape
    for i in range(64):
        ys, xs = np.nonzero(out[i, 0, :, :, 0])
        assert len(ys) == 1 and abs(ys[0] - 4) <= 2 and abs(xs[0] - 4) <= 2
        np.testing.assert_array_equal(out[i, 0], out[i, 1])  # both cameras shift alike
    positions = {tuple(np.argwhere(out[i, 0, :, :, 0])[0]) for i in range(64)}
    assert len(positions) > 5  # shifts differ between samples


@pytest.fixture(scope="module")
def latent_and_params():
    student = Student(
        action_size=3, use_rgb=True, use_depth=True, features=16, hidden=(16,), kind="latent"
    )
    return student, student.init(jax.random.PRNGKey(0), OBS)


def test_latent_student_learns_only_after_its_frozen_encoder(latent_and_params):
    student, params = latent_and_params
    obs = dict(
        OBS,
        rgb=jax.random.randint(jax.random.PRNGKey(1), OBS["rgb"].shape, 0, 256).astype(jnp.uint8),
        depth=jax.random.uniform(jax.random.PRNGKey(2), OBS["depth"].shape, maxval=0.4),
    )
    latents = student.apply(params, obs, method=Student.encode)
    # Two cameras of 4x4x64 conv features at 32x32 (no dense layer), and 8x8 depth cells each.
    assert latents["rgb_latent"].shape == (5, 2 * 4 * 4 * 64)
    assert latents["depth_latent"].shape == (5, 2 * 8 * 8)
    assert "Dense_0" not in params["params"]["rgb_encoder"]
    # The depth cells are the means of 4x4 blocks, scaled by the depth range.
    block = np.asarray(obs["depth"])[3, 1, 4:8, 12:16].mean() / student.depth_scale_m
    np.testing.assert_allclose(latents["depth_latent"][3, 64 + 1 * 8 + 3], block, rtol=1e-5)
    # The head on the latents is the whole student on the images.
    whole = student.apply(params, obs)
    parts = student.apply(params, latents, method=Student.head)
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # DAgger's loss reads latents: no gradient reaches the convolutions, and the optimiser
    # keeps them where CIFAR left them even if one did.
    batch = {**latents, "action": jnp.zeros((5, 3)), "pose": jnp.zeros((5, 7))}
    cfg = dagger.default_config()
    cfg.student = "latent"
    loop = dagger.Dagger.__new__(dagger.Dagger)
    loop.student, loop.config = student, cfg
    grads, _ = jax.grad(loop.loss, has_aux=True)(params, batch)
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads["params"]["rgb_encoder"]))
    assert any(np.any(np.asarray(g)) for g in jax.tree.leaves(grads["params"]["rgb_latent"]))
    opt = dagger.make_optimizer(cfg)
    ones = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(ones, opt.init(params), params)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates["params"]["rgb_encoder"]))


def test_latent_student_takes_the_pretrained_convolutions_only(latent_and_params):
    _, params = latent_and_params
    pixels = Student(action_size=3, use_rgb=True, features=32, hidden=(16,))
    cifar = pixels.init(jax.random.PRNGKey(3), OBS)["params"]["rgb_encoder"]  # convs + Dense_0
    out, fresh = init_from_pretrained(params, cifar)
    assert fresh == () and set(out["params"]["rgb_encoder"]) == {"Conv_0", "Conv_1", "Conv_2"}
    np.testing.assert_array_equal(
        out["params"]["rgb_encoder"]["Conv_2"]["kernel"], cifar["Conv_2"]["kernel"]
    )


def test_depth_pooling_needs_a_whole_grid():
    with pytest.raises(ValueError, match="do not split into a 8x8 grid"):
        pool_depth(jnp.zeros((1, 2, 30, 32)), 8)
