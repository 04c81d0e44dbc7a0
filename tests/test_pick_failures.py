"""scripts/pick_failures.py: sorting AlohaS2RPick episodes into success and kinds of failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from playground.files import policy_file

from .conftest import load_script

REPO = Path(__file__).resolve().parents[1]


def test_count_outcomes_sorts_each_kind_of_episode():
    steps, tol_m, tol_rad = 5, 0.025, 0.26
    # Episodes (columns): success; near but tilted; near and level; reached then dropped;
    # never reached; terminated at step 2 (block off the table).
    rec = {
        "dist": np.full((steps, 6), 0.2),
        "tilt": np.zeros((steps, 6)),
        "success": np.zeros((steps, 6)),
        "done": np.zeros((steps, 6)),
        "truncation": np.zeros((steps, 6)),
    }
    rec["done"][4, :5] = 1.0
    rec["truncation"][4, :5] = 1.0
    rec["done"][2, 5] = 1.0
    rec["success"][4, 0] = 1.0
    rec["dist"][3, :3] = 0.01  # the end state is read one step before the last
    rec["tilt"][3, 1] = 0.5
    rec["success"][1, 3] = 1.0  # at the target once, away at the end
    rec["dist"][4, 4] = 0.0  # the auto-reset row is not read
    counts = load_script("pick_failures").count_outcomes(rec, tol_m, tol_rad)
    assert counts == {
        "episodes": 6,
        "successes": 1,
        "near_target_but_tilted": 1,
        "near_target_level": 1,
        "away_after_reaching": 1,
        "never_reached": 1,
        "terminated": 1,
    }


@pytest.mark.slow
def test_shipped_teacher_failures_add_up_to_eval_policy_result():
    payload = policy_file.read_policy(
        REPO / "params" / "aloha_s2r_pick_native" / "policy.safetensors", "AlohaS2RPick"
    )
    counts = load_script("pick_failures").classify(payload, 16)
    result = load_script("eval_policy").evaluate_policy(payload, 16)
    assert counts["successes"] == result["successes"]
    assert sum(v for k, v in counts.items() if k != "episodes") == 16
