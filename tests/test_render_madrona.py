"""The Madrona adapter: here (no CUDA, no madrona_mjx) it must refuse cleanly, with the reason."""

from __future__ import annotations

import mujoco
import pytest

import playground  # noqa: F401
from playground.render.base import RenderSpec
from playground.render.madrona import MadronaRenderer, madrona_unavailable_reason

XML = """
<mujoco>
  <worldbody>
    <camera name="cam" pos="0 -1 0.5" xyaxes="1 0 0 0 0.5 1"/>
    <geom type="sphere" size="0.1"/>
  </worldbody>
</mujoco>
"""


def test_unavailable_reason_is_a_line():
    reason = madrona_unavailable_reason()
    if reason is None:
        pytest.skip("madrona_mjx is usable here; this test covers machines without it")
    assert isinstance(reason, str) and reason.strip() and "\n" not in reason


def test_construction_refuses_with_the_reason():
    reason = madrona_unavailable_reason()
    if reason is None:
        pytest.skip("madrona_mjx is usable here; this test covers machines without it")
    model = mujoco.MjModel.from_xml_string(XML)
    with pytest.raises(RuntimeError) as err:
        MadronaRenderer(model, RenderSpec(cameras=("cam",)), batch_size=2)
    assert reason in str(err.value)
