"""Tests of the segmentation metrics in cpjax.metrics: confusion matrix and the FCN scores."""
import jax
import numpy as np
import pytest

from cpjax import metrics


def test_confusion_matrix_hand_example_ignores_255():
  """A 2x3 label map with one ignored pixel, against the matrix counted by hand."""
  labels = np.array([[[0, 1, 255], [2, 2, 1]]], np.uint8)
  pred = np.array([[[0, 2, 1], [2, 0, 1]]], np.int32)
  # true 0 -> 0; true 1 -> 2, 1; true 2 -> 2, 0; the 255 pixel counts nowhere.
  expected = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 1]], np.float32)
  got = np.asarray(metrics.confusion_matrix(labels, pred, 3))
  assert got.shape == (1, 3, 3)
  np.testing.assert_array_equal(got[0], expected)


def test_confusion_matrix_matches_bincount_per_example():
  """Random [B, H, W] maps with ~10 % ignored pixels: each example's matrix equals the
  reference's `_fast_hist` (np.bincount of K * true + pred over non-ignored pixels), jitted,
  and the batch sum is the matrix of all pixels together (accumulation over a split)."""
  r = np.random.default_rng(0)
  k = 5
  labels = r.integers(0, k, size=(3, 17, 13)).astype(np.uint8)
  labels[r.uniform(size=labels.shape) < 0.1] = 255
  pred = r.integers(0, k, size=labels.shape)
  got = np.asarray(jax.jit(metrics.confusion_matrix, static_argnums=2)(labels, pred, k))

  def fast_hist(t, p):
    keep = t != 255
    return np.bincount(k * t[keep].astype(int) + p[keep], minlength=k * k).reshape(k, k)

  for b in range(3):
    np.testing.assert_array_equal(got[b], fast_hist(labels[b], pred[b]))
  np.testing.assert_array_equal(got.sum(0), fast_hist(labels.ravel(), pred.ravel()))


def test_scores_hand_computed():
  """hist [[3,1,0],[2,4,0],[0,0,0]] (class 2 absent): row sums 4, 6; column sums 5, 5.
  pixel acc 7/10; mean acc (3/4 + 4/6) / 2; IU 3/6 and 4/7; fwIU 0.4 * 3/6 + 0.6 * 4/7."""
  scores = metrics.segmentation_scores(np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]]))
  assert scores == pytest.approx({"pixel_acc": 0.7, "mean_acc": (0.75 + 4 / 6) / 2,
                                  "mean_iu": (0.5 + 4 / 7) / 2,
                                  "fw_iu": 0.4 * 0.5 + 0.6 * 4 / 7}, abs=1e-12)


def test_scores_class_predicted_but_absent_counts_in_mean_iu_only():
  """hist [[2,1],[0,0]]: class 1 never occurs but is predicted once. Its accuracy is 0/0 (left
  out of mean acc) but its IU is 0/1 = 0 (kept in mean IU), as in the reference; fwIU weighs
  it by its frequency 0."""
  scores = metrics.segmentation_scores(np.array([[2, 1], [0, 0]]))
  assert scores == pytest.approx({"pixel_acc": 2 / 3, "mean_acc": 2 / 3, "mean_iu": 1 / 3,
                                  "fw_iu": 2 / 3}, abs=1e-12)


def test_scores_perfect_and_all_wrong():
  """A diagonal matrix scores 1 everywhere; a matrix with an empty diagonal scores 0."""
  assert metrics.segmentation_scores(np.diag([5, 1, 7])) == pytest.approx(
      {"pixel_acc": 1.0, "mean_acc": 1.0, "mean_iu": 1.0, "fw_iu": 1.0})
  assert metrics.segmentation_scores(np.array([[0, 4], [3, 0]])) == pytest.approx(
      {"pixel_acc": 0.0, "mean_acc": 0.0, "mean_iu": 0.0, "fw_iu": 0.0})
