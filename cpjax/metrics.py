"""Image-quality metrics, per example, on float images in [0, 1].

Every function takes [B, H, W, C] arrays and returns [B] float32, so the trainer can average
over valid examples of a padded evaluation batch. Other systems add their own metrics here
(fMSE, segmentation confusion matrices).
"""
from __future__ import annotations

import math
from typing import Any

import chex
import dm_pix
import jax
import jax.numpy as jnp
import numpy as np


def _check_pair(pred: jax.Array, target: jax.Array) -> None:
  """Both [B, H, W, C] of one shape: a broadcast (one target for a batch, or grey against
  colour) would silently score the wrong pairs."""
  chex.assert_rank([pred, target], 4)
  chex.assert_equal_shape([pred, target])


def l1_per_example(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute error over H, W, C: [B]."""
  _check_pair(pred, target)
  return jnp.mean(jnp.abs(pred - target), axis=(1, 2, 3))


def psnr(pred: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB with a fixed peak (1 for [0, 1] images): [B]."""
  _check_pair(pred, target)
  mse = jnp.mean(jnp.square(pred - target), axis=(1, 2, 3))
  return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, 1e-10))


def ssim(pred: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
  """Structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01,
  K2 0.03), averaged over pixels and channels: [B]. Equals scikit-image's
  `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=max_value, channel_axis=-1)` away from the borders (dm-pix's valid-window SSIM)."""
  _check_pair(pred, target)
  return dm_pix.ssim(pred, target, max_val=max_value)


# Foreground-ratio ranges of the foreground-aware harmonisation paper's Table 2 (inclusive at
# both ends, as the reference's evaluate_model_fg_ratios.py tests min <= ratio <= max).
FOREGROUND_RATIO_BUCKETS = ((0.0, 0.05), (0.05, 0.15), (0.15, 1.0))


def harmonization_scores(pred: jax.Array, target: jax.Array, mask: jax.Array,
                         valid: jax.Array | None = None) -> dict[str, jax.Array]:
  """MSE, fMSE and PSNR per image, computed as saic-vul/image_harmonization evaluates.

  On the 0-255 scale, with the prediction clamped to [0, 255] (not rounded):
    MSE  = mean over H, W, C of (pred - target)^2;
    fMSE = sum(mask * (pred - target)^2) / (C * sum(mask) + 1e-6);
    PSNR = 10 log10(max(target)^2 / (MSE + 1e-6)), the peak being the image's own target maximum.
  The reference evaluates at 256x256 (every input resized bilinearly, masks too): give images
  at that size (`eval.mode='resize'` in the data config does it). With `valid`, only the valid
  pixels of each image count (the mean, the masked sum and the peak): images of different sizes
  padded to one canvas are scored as if cropped to their own size.

  Args:
    pred: [B, H, W, C] prediction in [0, 1] (values outside are clamped).
    target: [B, H, W, C] ground truth in [0, 1].
    mask: [B, H, W, 1] foreground in [0, 1] (a bilinearly resized mask may be soft).
    valid: optional [B, H, W, 1] in {0, 1}: the pixels that belong to the image.

  Returns:
    {'mse': [B], 'fmse': [B], 'psnr': [B]} float32.
  """
  _check_pair(pred, target)
  chex.assert_shape([mask] + ([] if valid is None else [valid]), (*pred.shape[:3], 1))
  pred255 = jnp.clip(pred.astype(jnp.float32) * 255.0, 0.0, 255.0)
  target255 = target.astype(jnp.float32) * 255.0
  err = jnp.square(pred255 - target255)
  channels = err.shape[-1]
  v = jnp.ones_like(mask, jnp.float32) if valid is None else valid.astype(jnp.float32)
  mse = jnp.sum(v * err, axis=(1, 2, 3)) / (channels * jnp.sum(v, axis=(1, 2, 3)))
  m = mask.astype(jnp.float32) * v
  fmse = jnp.sum(m * err, axis=(1, 2, 3)) / (channels * jnp.sum(m, axis=(1, 2, 3)) + 1e-6)
  peak = jnp.max(v * target255, axis=(1, 2, 3))
  psnr = 10.0 * jnp.log10(jnp.square(peak) / (mse + 1e-6))
  return {"mse": mse, "fmse": fmse, "psnr": psnr}


def _first_count(pixels: int, bound: float) -> int:
  """The smallest pixel count c with c / pixels >= bound (float64, as the reference)."""
  c = max(0, math.ceil(bound * pixels) - 1)
  while c / pixels < bound:
    c += 1
  return c


def _last_count(pixels: int, bound: float) -> int:
  """The largest pixel count c with c / pixels <= bound (float64, as the reference)."""
  c = min(pixels, math.floor(bound * pixels) + 1)
  while c >= 0 and c / pixels > bound:
    c -= 1
  return c


def foreground_ratio_buckets(mask: jax.Array,
                             buckets: tuple[tuple[float, float], ...] = FOREGROUND_RATIO_BUCKETS
                             ) -> jax.Array:
  """Membership of each image in the foreground-ratio ranges: [B, len(buckets)] float32 in {0, 1}.

  The ratio is the fraction of pixels with mask > 0.5 (as the reference); a ratio on a boundary
  (exactly 5 %) belongs to both neighbouring ranges, as in the reference.

  Args:
    mask: [B, H, W, 1] in [0, 1].
    buckets: (lo, hi) ranges, inclusive.
  """
  pixels = mask.shape[1] * mask.shape[2]
  count = jnp.sum((mask > 0.5).astype(jnp.int32), axis=(1, 2, 3))[:, None]
  # Integer bounds equivalent to the float64 tests lo <= count / pixels <= hi (exact at the
  # boundaries, which float32 division on device is not).
  lo = [_first_count(pixels, b[0]) for b in buckets]
  hi = [_last_count(pixels, b[1]) for b in buckets]
  inside = (count >= jnp.asarray(lo, jnp.int32)) & (count <= jnp.asarray(hi, jnp.int32))
  return inside.astype(jnp.float32)


HARMONIZATION_METRICS = (("MSE", "mse"), ("fMSE", "fmse"), ("PSNR", "psnr"))


def _row(sums: dict[str, Any], prefix: str, index: int | None, n: float) -> dict[str, float]:
  pick = lambda v: float(v if index is None else v[index])  # noqa: E731
  return {"N": int(round(n)), **{label: pick(sums[f"{prefix}{key}"]) / n
                                 for label, key in HARMONIZATION_METRICS}}


def harmonization_table(sums: dict[str, Any], count: int, groups: dict[str, tuple[str, ...]],
                        prefix: str = "") -> dict[str, Any]:
  """Means of summed per-image scores: All, and per group member (Tables 1 and 2 of the paper).

  Args:
    sums: summed per-image scores (`cpjax.tasks.base.Task.summarize_eval`'s input):
      '{prefix}mse', '{prefix}fmse', '{prefix}psnr' scalars over all images, and for each group
      G: '{G}_n' [K] (images in each member), '{prefix}{G}_mse' etc. [K] (sums of the scores
      times membership).
    count: number of images.
    groups: group name -> member names, e.g. {'subset': ('HCOCO', ...), 'foreground_ratio':
      ('0-5%', '5-15%', '15-100%')}.
    prefix: which prediction the scores belong to (e.g. '' for the model, 'composite_').

  Returns:
    {'All': row, G: {member: row for members with images}} with rows {'N', 'MSE', 'fMSE', 'PSNR'}.
  """
  table: dict[str, Any] = {"All": _row(sums, prefix, None, count)}
  for group, members in groups.items():
    counts = np.asarray(sums[f"{group}_n"], np.float64)
    table[group] = {name: _row({k: np.asarray(v) for k, v in sums.items()
                                if k.startswith(f"{prefix}{group}_")},
                               f"{prefix}{group}_", i, counts[i])
                    for i, name in enumerate(members) if counts[i] > 0}
  return table


def format_harmonization_table(tables: dict[str, dict[str, Any]], group: str) -> str:
  """A markdown table like the paper's Table 1 / 2: one row per method, MSE / fMSE / PSNR per
  column (the members of `group` that have images, then All).

  Args:
    tables: method name -> `harmonization_table` result (e.g. {'composite': ..., 'iDIH': ...}).
    group: the group whose members are the columns ('subset' or 'foreground_ratio').
  """
  first = next(iter(tables.values()))
  columns = list(first.get(group, {})) + ["All"]
  header = "| method | " + " | ".join(f"{c} MSE / fMSE / PSNR" for c in columns) + " |"
  lines = [header, "|---" * (len(columns) + 1) + "|"]
  for method, table in tables.items():
    cells = []
    for c in columns:
      row = table["All"] if c == "All" else table[group][c]
      cells.append(f"{row['MSE']:.2f} / {row['fMSE']:.2f} / {row['PSNR']:.2f}")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def confusion_matrix(labels: jax.Array, pred: jax.Array, num_classes: int,
                     ignore_label: int = 255) -> jax.Array:
  """Per-example segmentation confusion matrix hist[true, predicted] (pixel counts).

  Pixels whose label is `ignore_label` (or otherwise outside [0, K)) count nowhere, as in the
  FCN reference's `_fast_hist`. Computed as one-hot(true)^T one-hot(pred), a matmul that runs
  well on accelerators. Counts are exact in float32 up to 2^24 pixels per summed matrix.

  Args:
    labels: [B, H, W] int class ids in [0, K) or `ignore_label`.
    pred: [B, H, W] int predicted class ids in [0, K).
    num_classes: K.
    ignore_label: label of pixels to skip.

  Returns:
    [B, K, K] float32; sum over the batch and the split for `segmentation_scores`.
  """
  batch = labels.shape[0]
  labels = jnp.where(labels == ignore_label, -1, labels.astype(jnp.int32))
  # one_hot of a label outside [0, K) is an all-zero row: the pixel counts nowhere.
  true_1h = jax.nn.one_hot(labels.reshape(batch, -1), num_classes, dtype=jnp.float32)
  pred_1h = jax.nn.one_hot(pred.reshape(batch, -1), num_classes, dtype=jnp.float32)
  return jnp.einsum("bnt,bnp->btp", true_1h, pred_1h, precision=jax.lax.Precision.HIGHEST)


def segmentation_scores(hist: np.ndarray) -> dict[str, float]:
  """The FCN paper's four scores from one confusion matrix over a whole split (as pytorch-fcn).

  With n_ij the pixels of class i predicted as j, t_i = sum_j n_ij and K' the classes present:
    pixel_acc = sum_i n_ii / sum_i t_i;   mean_acc = nanmean_i n_ii / t_i;
    mean_iu = nanmean_i n_ii / (t_i + sum_j n_ji - n_ii);
    fw_iu = sum over classes with t_i > 0 of (t_i / sum t) IU_i.
  mean_acc leaves out classes absent from the labels, mean_iu those absent from both labels
  and predictions (their ratios are NaN), as the reference's `label_accuracy_score` does.

  Args:
    hist: [K, K] counts (true x predicted), e.g. the summed `confusion_matrix`.

  Returns:
    {'pixel_acc', 'mean_acc', 'mean_iu', 'fw_iu'} as floats in [0, 1].
  """
  hist = np.asarray(hist, np.float64)
  diag, rows, cols = np.diag(hist), hist.sum(axis=1), hist.sum(axis=0)
  with np.errstate(divide="ignore", invalid="ignore"):
    class_acc = diag / rows
    iu = diag / (rows + cols - diag)
  freq = rows / hist.sum()
  present = freq > 0
  return {"pixel_acc": float(diag.sum() / hist.sum()),
          "mean_acc": float(np.nanmean(class_acc)),
          "mean_iu": float(np.nanmean(iu)),
          "fw_iu": float(np.sum(freq[present] * iu[present]))}
