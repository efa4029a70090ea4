"""The held-out harmonisation check: its problems (shift strengths down to none) and its rows
(per strength, with how far the result moved from its input)."""
from __future__ import annotations

import numpy as np

from conftest import load_config
from cpjax import tasks
from experiments import harmonization_heldout as heldout


def test_problems_cover_every_strength_and_none_is_the_target_itself():
  """6 photos x per_cell problems per strength; with strength 'none' the composite is the
  target, with the others it differs inside the silhouette only, more for stronger shifts."""
  by_strength: dict[str, list[float]] = {}
  for strength, _, composite, mask, target in heldout.problems(32, 2, seed=0):
    assert set(np.unique(mask)) <= {0.0, 1.0} and mask.sum() > 0
    outside = np.broadcast_to(mask == 0, target.shape)
    np.testing.assert_array_equal(composite[outside], target[outside])
    inside = np.broadcast_to(mask == 1, target.shape)
    by_strength.setdefault(strength, []).append(
        float(np.abs(composite - target)[inside].mean()))
  assert sorted(by_strength) == sorted(heldout.STRENGTHS)
  assert all(len(v) == 12 for v in by_strength.values())
  assert max(by_strength["none"]) < 1e-6
  means = [np.mean(by_strength[s]) for s in ("mild", "medium", "strong")]
  assert 0.005 < means[0] < means[1] < means[2]


def test_rows_order_strengths_and_report_the_change():
  """rows(): strong ... none then all; each row holds composite, model and change means."""
  scored = lambda v: {"mse": v, "fmse": 10 * v, "psnr": 30.0}
  per_problem = [(s, g, scored(i), scored(i + 1), {"mse": 0.5 * i, "fmse": 5.0 * i})
                 for i, (s, g) in enumerate([("none", "grey"), ("mild", "colour"),
                                             ("strong", "grey"), ("none", "colour")])]
  out = heldout.rows(per_problem)
  assert [r["strength"] for r in out if r["photos"] == "all"] == ["strong", "mild", "none", "all"]
  none = next(r for r in out if (r["strength"], r["photos"]) == ("none", "all"))
  assert none["n"] == 2 and none["change"] == {"mse": 0.75, "fmse": 7.5}
  assert none["model"]["fmse"] == 25.0 and none["composite"]["fmse"] == 15.0
  assert out[-1]["n"] == 4


def test_demo_problems_are_the_runs_own_at_fixed_strengths():
  """--problems=demo: the demo's synthetic problems on its evaluation photos, per photo, at
  s = 1, 0.5, 0.25, 0: none leaves the (recoloured) target as is, strong changes the most."""
  task = tasks.build(load_config("harmonization_demo", "tiny"))
  change: dict[str, list[float]] = {}
  for strength, photo, composite, mask, target in heldout.demo_problems(
      task, "samples:eval", 32, 2, seed=0):
    assert photo in ("chelsea", "coffee") and composite.shape == target.shape == (32, 32, 3)
    change.setdefault(strength, []).append(float(np.abs(composite - target).max()))
  assert sorted(change) == sorted(heldout.DEMO_STRENGTHS) and len(change["none"]) == 4
  assert max(change["none"]) < 1e-6
  assert np.mean(change["strong"]) > np.mean(change["mild"]) > 0.0
