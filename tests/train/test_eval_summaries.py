"""The trainer's evaluation reduction: per-example metrics with trailing axes, summed over the
valid examples, then `Task.summarize_eval`."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from cpjax.tasks import base
from cpjax.train import trainer


class _Counting(base.Task):
  """Per-example metrics: a scalar, a [2, 2] matrix; only eval_step is used here."""

  def init(self, key):
    raise NotImplementedError

  def train_step(self, state, batch, key):
    raise NotImplementedError

  def samples(self, state, batch, key):
    raise NotImplementedError

  def eval_step(self, state, batch, key):
    x = batch["x"]
    return {"x": x, "outer": x[:, None, None] * jnp.eye(2)[None], "log": jnp.log(x)}


def test_sums_keep_trailing_axes_and_skip_padding():
  """Padding examples (valid False) count for nothing, even where their metric is -inf; a
  [B, 2, 2] metric sums to [2, 2]."""
  fake = trainer._Run.__new__(trainer._Run)
  fake.task = _Counting(None)
  batch = {"x": jnp.array([1.0, 2.0, 3.0, 0.0]), "valid": jnp.array([True, True, True, False])}
  sums, count = fake._eval_sums(None, batch, None)
  assert float(count) == 3
  np.testing.assert_allclose(sums["x"], 6.0)
  # The padding example's log(0) = -inf does not poison the sum.
  np.testing.assert_allclose(sums["log"], np.log(6.0), rtol=1e-6)
  np.testing.assert_allclose(sums["outer"], 6.0 * np.eye(2))


def test_default_summary_averages_scalars_only():
  """The default summarize_eval divides scalar sums by the count and leaves out arrays."""
  summary = _Counting(None).summarize_eval({"x": np.float64(6.0), "outer": np.eye(2)}, 3)
  assert summary == {"x": 2.0}


def test_json_and_tensorboard_views_of_nested_results():
  """Nested results become plain JSON, and every number gets a '/'-joined TensorBoard name."""
  results = trainer._to_json({"table": {"HCOCO": {"mse": np.float32(1.5)}, "ratios": [np.int64(2)]},
                              "psnr": np.float64(30.0), "name": "x", "flag": True})
  assert results == {"table": {"HCOCO": {"mse": 1.5}, "ratios": [2]}, "psnr": 30.0, "name": "x",
                     "flag": True}
  assert trainer._numeric_leaves(results) == {"table/HCOCO/mse": 1.5, "table/ratios/0": 2.0,
                                              "psnr": 30.0}
