"""Shared building blocks: transposed convolution, pixelwise feature normalisation, noise
injection, conv blocks, repeated blocks compiled once (`repeated`).

Images and feature maps are NHWC. Every module takes `dtype` (compute) and `param_dtype`
(storage); normalisation statistics are computed in float32 whatever the compute dtype.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any
Padding = str | Sequence[tuple[int, int]]


def _transpose_padding(kernel: int, stride: int, padding: str | tuple[int, int]) -> tuple[int, int]:
  """The (low, high) padding of the dilated input that `lax.conv_transpose` uses."""
  if not isinstance(padding, str):
    return tuple(padding)
  if padding == "SAME":
    total = kernel + stride - 2
    low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
  elif padding == "VALID":
    total = kernel + stride - 2 + max(kernel - stride, 0)
    low = kernel - 1
  else:
    raise ValueError(f"conv_transpose: padding {padding!r}; use 'SAME', 'VALID' or (low, high) "
                     "pairs.")
  return low, total - low


def _phases(size: int, kernel: int, stride: int, low: int, high: int
            ) -> tuple[int, int, list[tuple[list[int], int]]]:
  """One axis of a transposed conv split into its `stride` output phases.

  Output o = stride * m + r (phase r) is sum_j k[t_j] x[m + d_0 + j] over the taps t_j = t_0 +
  j * stride that land on input samples, with d_0 = (r + t_0 - low) / stride.

  Returns:
    (output length, outputs per phase ceil(length / stride), [(taps t_j, d_0)] per phase).
  """
  length = stride * (size - 1) + 1 + low + high - kernel + 1
  phases = []
  for r in range(stride):
    taps = [t for t in range(kernel) if (r + t - low) % stride == 0]
    phases.append((taps, (r + taps[0] - low) // stride if taps else 0))
  return length, -(-length // stride), phases


def _shift_pad(x: jax.Array, axis: int, first: int, count: int, taps: int) -> jax.Array:
  """Pads (negative: crops) x along `axis` so that a VALID `taps`-tap window at output m reads
  x[m + first ...], for m = 0 .. count - 1."""
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (-first, count - 1 + first + taps - 1 - (x.shape[axis] - 1), 0)
  return lax.pad(x, jnp.zeros((), x.dtype), config)


@dataclasses.dataclass(frozen=True)
class _PhasePlan:
  """Static description of `conv_transpose`'s phases: per axis [(taps, d_0)] and the outputs
  per phase."""
  phases_y: tuple[tuple[list[int], int], ...]
  phases_x: tuple[tuple[list[int], int], ...]
  m_y: int
  m_x: int

  def __hash__(self):
    return hash(repr(self))


def _tap_slice(kernel: jax.Array, taps_y: list[int], taps_x: list[int]) -> jax.Array:
  """kernel[taps_y][:, taps_x] for taps evenly spaced (a phase's t_0 + j * stride) as static
  strided slices: indexing with the tap lists would be a gather, which XLA:CPU runs on every
  call (8 ms for iDIH's 4x4x512x256 kernel, 15 % of its batch-1 inference)."""
  def spaced(taps: list[int]) -> slice:
    step = taps[1] - taps[0] if len(taps) > 1 else 1
    if list(range(taps[0], taps[-1] + 1, step)) != list(taps):
      raise ValueError(f"conv_transpose: phase taps {taps} are not evenly spaced")
    return slice(taps[0], taps[-1] + 1, step)
  return kernel[spaced(taps_y), spaced(taps_x)]


def _aligned_sub_kernels(kernel: jax.Array, first_y: list[int], first_x: list[int]
                         ) -> jax.Array:
  """sub[wy, wx, i, ry, rx, o] = kernel[first_y[ry] + s_y wy, first_x[rx] + s_x wx, i, o]:
  the sub-kernels of all phases when each phase r has taps first[r] + s j for j < k / s (s
  divides k), [k_y / s_y, k_x / s_x, I, s_y, s_x, O].

  A phase's first tap is (low - r) mod s, so along each axis the kernel, reshaped to
  [k / s, s], has its second axis reversed and rolled: a fixed handful of ops whatever the
  number of phases (FCN-32s's 64x64 stride-32 kernel has 1024; one slice per phase made its
  gradient take minutes to compile), and no gather (which XLA:CPU would run on every call)."""
  kh, kw, i, o = kernel.shape
  sy, sx = len(first_y), len(first_x)
  x = kernel.reshape(kh // sy, sy, kw // sx, sx, i, o)
  for axis, first in ((1, first_y), (3, first_x)):
    s = len(first)
    if first != [(first[0] - r) % s for r in range(s)]:
      raise ValueError(f"conv_transpose: phase taps {first} are not (c - r) mod {s}")
    x = jnp.roll(jnp.flip(x, axis), (first[0] + 1) % s, axis)   # [r] -> [(c - r) mod s]
  return x.transpose(0, 2, 4, 1, 3, 5)


def _phase_inputs(x: jax.Array, plan: _PhasePlan):
  """Yields (r_y, r_x, taps_y, taps_x, input padded for that phase) for every phase."""
  for ry, (taps_y, d_y) in enumerate(plan.phases_y):
    for rx, (taps_x, d_x) in enumerate(plan.phases_x):
      xp = (_shift_pad(_shift_pad(x, 1, d_y, plan.m_y, len(taps_y)), 2, d_x, plan.m_x,
                       len(taps_x)) if taps_y and taps_x else None)
      yield ry, rx, taps_y, taps_x, xp


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _phase_convs(x: jax.Array, kernel: jax.Array, plan: _PhasePlan) -> jax.Array:
  """The phases of a transposed conv as separate stride-1 convs: [B, m_y, m_x, s_y, s_x, O].

  Forward: one conv per phase with its sub-kernel. Backward (`_phase_convs_bwd`): the input
  gradient is one strided conv (XLA's gradient of `lax.conv_transpose` with respect to its
  input), the kernel gradient one matrix product per tap, dK[t] = X_t^T dY_r over all batch
  and pixel positions. XLA:CPU computes the kernel gradient of a conv as another conv whose
  window is the whole image, 3-6x slower than these products for the decoders' layers.
  """
  batch, out = x.shape[0], kernel.shape[-1]
  dims = ("NHWC", "HWIO", "NHWC")
  rows: list[list[jax.Array]] = [[] for _ in plan.phases_y]
  for ry, _, taps_y, taps_x, xp in _phase_inputs(x, plan):
    if xp is None:   # a kernel smaller than the stride leaves gaps
      rows[ry].append(jnp.zeros((batch, plan.m_y, plan.m_x, out), jnp.result_type(x, kernel)))
      continue
    sub = _tap_slice(kernel, taps_y, taps_x)
    rows[ry].append(lax.conv_general_dilated(xp, sub, (1, 1), "VALID", dimension_numbers=dims))
  return jnp.stack([jnp.stack(row, axis=3) for row in rows], axis=3)


def _phase_convs_fwd(x, kernel, plan):
  return _phase_convs(x, kernel, plan), (x, kernel)


def _phase_convs_bwd(plan, residuals, dy):
  x, kernel = residuals
  _, to_input = jax.vjp(lambda x: _phase_convs_reference(x, kernel, plan), x)
  (dx,) = to_input(dy)
  dk = jnp.zeros(kernel.shape, jnp.float32)
  for ry, rx, taps_y, taps_x, xp in _phase_inputs(x, plan):
    if xp is not None:
      taps = [(ty, tx, xp[:, j:j + plan.m_y, l:l + plan.m_x])
              for j, ty in enumerate(taps_y) for l, tx in enumerate(taps_x)]
      dk = dk + _tap_products(dy[:, :, :, ry, rx], taps, kernel.shape)
  return dx, dk.astype(kernel.dtype)


def _phase_convs_reference(x: jax.Array, kernel: jax.Array, plan: _PhasePlan) -> jax.Array:
  """`_phase_convs` without the custom gradient (its input gradient is XLA's strided conv)."""
  return _phase_convs.fun(x, kernel, plan)


_phase_convs.defvjp(_phase_convs_fwd, _phase_convs_bwd)


def conv_transpose(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                   padding: Padding, *, subpixel: bool = True) -> jax.Array:
  """`lax.conv_transpose` (NHWC, HWIO kernel, not transposed), computed as stride-1 convolutions.

  A transposed conv of stride s correlates the input dilated by s (s - 1 zeros between samples)
  with the kernel. Output phase (r_y, r_x) (outputs s m + r) only meets the taps t = r - low
  (mod s), so it is a plain stride-1 conv of the undilated input with that sub-kernel
  ("sub-pixel" convolution, Shi et al. 2016). When every phase reads the same input window
  (e.g. the FCN's k = 2s 'VALID' upsampling, PyTorch's ConvTranspose2d(4, 2, padding=0)) the
  phases are one conv to s*s*O channels followed by depth-to-space; otherwise (e.g.
  ConvTranspose2d(4, 2, padding=1), whose even and odd outputs read different neighbours) one
  conv per phase, interleaved. Either way no multiply touches a dilation zero, and the backward
  pass is made of ordinary conv gradients: on XLA:CPU a 4x4 stride-2 layer trains 4-8x faster
  than `lax.conv_transpose`, whose gradient is a slow path there.

  The sums are the same terms in another order: outputs equal `lax.conv_transpose` to float
  rounding (tested).

  Args:
    x: [B, H, W, I].
    kernel: [kh, kw, I, O] (flax `ConvTranspose(transpose_kernel=False)`'s layout).
    strides: (s_y, s_x).
    padding: 'SAME', 'VALID' or ((low, high), (low, high)) of the dilated input, as
      `lax.conv_transpose`.
    subpixel: False: call `lax.conv_transpose` itself.

  Returns:
    [B, H', W', O] with H' = s_y (H - 1) + 1 + low + high - kh + 1 (2H for k4 s2 'SAME').
  """
  if not subpixel:
    return lax.conv_transpose(x, kernel, strides, padding,
                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
  pads = [padding] * 2 if isinstance(padding, str) else list(padding)
  axes = []
  for size, k, s, pad in zip(x.shape[1:3], kernel.shape[:2], strides, pads):
    axes.append(_phases(size, k, s, *_transpose_padding(k, s, pad)))
  (len_y, m_y, ph_y), (len_x, m_x, ph_x) = axes
  sy, sx = strides
  batch, out = x.shape[0], kernel.shape[-1]
  dims = ("NHWC", "HWIO", "NHWC")

  def aligned(phases):   # every phase reads the same window of the input
    return len({(len(t), d) for t, d in phases}) == 1 and phases[0][0]

  if aligned(ph_y) and aligned(ph_x):
    (taps_y, d_y), (taps_x, d_x) = ph_y[0], ph_x[0]
    sub = _aligned_sub_kernels(kernel, [t[0] for t, _ in ph_y], [t[0] for t, _ in ph_x])
    sub = sub.reshape(len(taps_y), len(taps_x), -1, sy * sx * out)
    xp = _shift_pad(_shift_pad(x, 1, d_y, m_y, len(taps_y)), 2, d_x, m_x, len(taps_x))
    y = lax.conv_general_dilated(xp, sub, (1, 1), "VALID", dimension_numbers=dims)
    y = y.reshape(batch, m_y, m_x, sy, sx, out)
  else:
    y = _phase_convs(x, kernel, _PhasePlan(tuple(ph_y), tuple(ph_x), m_y, m_x))
  y = y.transpose(0, 1, 3, 2, 4, 5).reshape(batch, m_y * sy, m_x * sx, out)
  return y[:, :len_y, :len_x]


def _normalize(x: jax.Array, mean: jax.Array, var: jax.Array, scale: jax.Array,
               bias: jax.Array, epsilon: float) -> tuple[jax.Array, jax.Array]:
  """(x - mean) / sqrt(var + epsilon) * scale + bias over the last axis, and
  1 / sqrt(var + epsilon)."""
  inv_std = lax.rsqrt(var + epsilon)
  return (x - mean) * (inv_std * scale) + bias, inv_std


def _per_channel(x: jax.Array) -> tuple[tuple[int, ...], int]:
  """The axes that a per-channel statistic of [..., C] reduces (all but the last), and the
  number of values per channel."""
  return tuple(range(x.ndim - 1)), x.size // x.shape[-1]


def _batch_statistics(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
  """Batch normalisation with batch statistics: (y, mean, var, 1 / sqrt(var + epsilon))."""
  axes, count = _per_channel(x)
  mean = jnp.sum(x, axes) / count
  var = jnp.maximum(jnp.sum(x * x, axes) / count - mean * mean, 0.0)
  y, inv_std = _normalize(x, mean, var, scale, bias, epsilon)
  return y, mean, var, inv_std


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Batch normalisation in training mode, with a hand-written backward pass.

  y = (x - mean) / sqrt(var + epsilon) * scale + bias, with the batch statistics over every
  axis but the last: mean = E[x] and var = max(E[x^2] - mean^2, 0) (the biased variance).

  The gradient is the textbook one: dx = scale / sqrt(var + epsilon) * (dy - E[dy] - x_hat
  E[dy x_hat]). It takes two reductions and one elementwise pass. JAX's differentiation of the
  forward pass makes twice as many passes over the activations, and BatchNorm lies on the
  train step's critical path (each layer's input gradient waits for it). A BatchNorm followed
  by an ELU, forward and gradients, took 14-16 ms that way and 11-12 ms this way at
  4x128x128x64; at 4x64x64x270 (HRNet's concatenated features) it took 26-31 ms and 12 ms.
  The cotangents of mean and var are included: they are outputs, so they can be
  differentiated. Where var is clamped at 0 the gradient is taken as if it were not. Reverse
  mode only (no `jax.jvp`); the backward pass is itself differentiable.

  Args:
    x: [..., C] float32.
    scale, bias: [C] float32.
    epsilon: added to the variance.

  Returns:
    (y [..., C], mean [C], var [C]).
  """
  y, mean, var, _ = _batch_statistics(x, scale, bias, epsilon)
  return y, mean, var


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  y, mean, var, inv_std = _batch_statistics(x, scale, bias, epsilon)
  return (y, mean, var), (x, mean, inv_std, scale)


def _batch_norm_train_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, mean, inv_std, scale = residuals
  dy, dmean, dvar = cotangents
  axes, count = _per_channel(x)
  centred = x - mean
  sum_dy = jnp.sum(dy, axes)
  sum_dy_centred = jnp.sum(dy * centred, axes)
  dx = ((scale * inv_std) * (dy - sum_dy / count
                             - centred * (inv_std * inv_std * sum_dy_centred / count))
        + dmean / count + centred * (2.0 * dvar / count))
  return dx, sum_dy_centred * inv_std, sum_dy


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
  """Batch normalisation over the last (feature) axis with PyTorch's (and Caffe's) running
  averages: flax `nn.BatchNorm`'s variables ('params': scale, bias; 'batch_stats': mean, var)
  and outputs, but the running variance averages the UNBIASED batch variance n / (n - 1) s^2
  (n = the values per channel: global batch x H x W), as torch.nn.BatchNorm2d does; flax's
  layer averages s^2. The two differ most where n is small (a 1x1 bottleneck: n = the batch),
  and the running averages are what evaluation uses. Normalisation in training mode uses s^2
  in both. Statistics in float32; under jit with the batch sharded over devices they are over
  the global batch (synchronised BatchNorm).

  Attributes:
    use_running_average: normalise with the running averages (evaluation).
    momentum: running average = momentum * average + (1 - momentum) * batch statistic
      (PyTorch's momentum 0.1 is 0.9 here).
    epsilon: added to the variance.
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., C] -> [..., C] in `dtype`."""
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
    x32, scale32, bias32 = (a.astype(jnp.float32) for a in (x, scale, bias))
    if self.use_running_average:
      y, _ = _normalize(x32, ra_mean.value, ra_var.value, scale32, bias32, self.epsilon)
      return y.astype(self.dtype)
    y, mean, var = batch_norm_train(x32, scale32, bias32, self.epsilon)
    if not self.is_initializing():
      _, n = _per_channel(x)
      unbiased = var * (n / max(n - 1, 1))
      ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * unbiased
    return y.astype(self.dtype)


def _tap_products(dy: jax.Array, taps: list[tuple[int, int, jax.Array]],
                  kernel_shape: tuple[int, ...]) -> jax.Array:
  """dK[ty, tx] = X_t^T dY for each tap (ty, tx, X_t [B, h, w, I]) over every batch and pixel
  position: the kernel gradient as one matrix product per tap, in float32 (zero for a tap not
  listed)."""
  flat_dy = dy.reshape(-1, dy.shape[-1]).astype(jnp.float32)
  products = {(ty, tx): lax.dot_general(x_t.reshape(-1, x_t.shape[-1]).astype(jnp.float32),
                                         flat_dy, (((0,), (0,)), ((), ())))
              for ty, tx, x_t in taps}
  zero = jnp.zeros(kernel_shape[2:], jnp.float32)
  # Contracted over rows without transposes, and stacked rather than written into a zero kernel
  # tap by tap (k*k scatters): the same values, and the tiny copy-paste train step compiles in
  # 13 s instead of 19 s.
  return jnp.stack([products.get((ty, tx), zero) for ty in range(kernel_shape[0])
                    for tx in range(kernel_shape[1])]).reshape(kernel_shape)


def _adjoint_kernel(kernel: jax.Array) -> jax.Array:
  """[kh, kw, I, O] -> [kh, kw, O, I], flipped spatially: the HWIO kernel of the conv that is a
  conv's transpose (its input gradient) and of a transposed conv's direct form."""
  return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def strided_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """`lax.conv_general_dilated` (NHWC, HWIO, explicit padding) with a backward pass of fast ops.

  The forward pass is XLA's conv. Its input gradient is a transposed conv of dY with the
  flipped kernel, computed by `conv_transpose`'s sub-pixel convolutions (XLA:CPU's own is a
  convolution of the dilated dY, its slow path); the kernel gradient is one matrix product per
  tap, dK[t] = X_t^T dY with X_t the input sampled at that tap's strided positions. Equal to
  XLA's gradients to float rounding (tested); differentiable again (the critic's gradient
  penalty differentiates through it).

  Args:
    x: [B, H, W, I].
    kernel: [kh, kw, I, O].
    strides: (s_y, s_x).
    padding: ((low, high), (low, high)).

  Returns:
    [B, H', W', O], H' = (H + low + high - kh) // s_y + 1.
  """
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _strided_conv_fwd(x, kernel, strides, padding):
  return strided_conv(x, kernel, strides, padding), (x, kernel)


def _strided_conv_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  (sy, sx), ((ly, hy), (lx, hx)) = strides, padding
  out_h, out_w = dy.shape[1:3]
  # dX[i] = sum_u K[u] dY[o] over s o + u = i + low: a transposed conv of dY with the flipped,
  # in/out-swapped kernel, whose dilated-input padding makes the output exactly H x W.
  pads = []
  for size, k, s, low, out in ((x.shape[1], kh, sy, ly, out_h), (x.shape[2], kw, sx, lx, out_w)):
    first = k - 1 - low
    pads.append((first, size + k - 2 - s * (out - 1) - first))
  dx = conv_transpose(dy, _adjoint_kernel(kernel), strides, tuple(pads)).astype(x.dtype)
  xp = jnp.pad(x, ((0, 0), (ly, hy), (lx, hx), (0, 0)))
  taps = [(ty, tx, xp[:, ty:ty + sy * (out_h - 1) + 1:sy, tx:tx + sx * (out_w - 1) + 1:sx])
          for ty in range(kh) for tx in range(kw)]
  return dx, _tap_products(dy, taps, kernel.shape).astype(kernel.dtype)


strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _plain_2d(lhs: jax.Array, rhs: jax.Array, lhs_dilation: Sequence[int] | None,
              rhs_dilation: Sequence[int] | None, dimension_numbers: Any,
              feature_group_count: int, batch_group_count: int = 1) -> bool:
  """Whether a conv is 2-D NHWC / HWIO, undilated and ungrouped, on a backend of
  `subpixel_default()`: the convs this module's hooks may rewrite."""
  return (lhs.ndim == 4
          and not any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
          and feature_group_count == 1 and batch_group_count == 1
          and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
          == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
          and subpixel_default())


def _explicit_padding(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                      padding: Any) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  return tuple(tuple(p) for p in padding)


def _unpadded_stride_1(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                       padding: Any) -> bool:
  return (all(s == 1 for s in window_strides)
          and all(p == (0, 0) for p in _explicit_padding(lhs, rhs, window_strides, padding)))


def _pointwise(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
               padding: Any) -> bool:
  """Whether a plain 2-D conv is a 1x1 kernel at stride 1 without padding: a matrix product."""
  return rhs.shape[:2] == (1, 1) and _unpadded_stride_1(lhs, rhs, window_strides, padding)


def patch_matmul_conv(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any,
                      lhs_dilation: Any = None, rhs_dilation: Any = None,
                      dimension_numbers: Any = None, feature_group_count: int = 1,
                      batch_group_count: int = 1, precision: Any = None,
                      preferred_element_type: Any = None) -> jax.Array:
  """flax `nn.Conv`'s convolution for unpadded stride-1 layers: on XLA:CPU, one matrix product
  of the input's patches with the kernel (a 1x1 conv: of the input itself).

  A 'VALID' stride-1 conv is y[p] = sum_{t, c} x[p + t, c] k[t, c, :] = P[p] K, where P
  concatenates the kh x kw shifted views of x along channels in the kernel's (ty, tx, c) order
  and K is the kernel reshaped to [kh kw I, O]. XLA:CPU runs FCN's fc6 (7x7, 512 -> 4096
  channels on an 18x22 map for a 500x375 image) as a convolution at a third of its
  matrix-product speed; as a product (the patches are 49x a small map) its forward pass is
  2.7x and its gradients 2.2x faster, fc7's (1x1) 1.6x and 2x. Patches multiply a large map's
  memory by kh kw, so `conv_general_dilated` sends only 1x1 convs here. Equal to the
  convolution to float rounding (tested). Anything else (padding, strides, dilations, groups,
  other backends) is lax's convolution.

  Args:
    lhs: [B, H, W, I]; rhs: [kh, kw, I, O]; the rest as `lax.conv_general_dilated`.

  Returns:
    [B, H - kh + 1, W - kw + 1, O].
  """
  plain = (_plain_2d(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                     feature_group_count, batch_group_count)
           and _unpadded_stride_1(lhs, rhs, window_strides, padding))
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  return _patch_product(lhs, rhs, precision, preferred_element_type)


def _patch_product(lhs: jax.Array, rhs: jax.Array, precision: Any,
                   preferred_element_type: Any) -> jax.Array:
  """`patch_matmul_conv`'s product for a conv already known to be plain and unpadded."""
  kh, kw, cin, cout = rhs.shape
  height, width = lhs.shape[1] - kh + 1, lhs.shape[2] - kw + 1
  patches = jnp.concatenate([lhs[:, ty:ty + height, tx:tx + width]
                             for ty in range(kh) for tx in range(kw)], axis=-1)
  return lax.dot_general(patches, rhs.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())),
                         precision=precision, preferred_element_type=preferred_element_type)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
  """`lax.conv_general_dilated`, with plain 2-D convs rewritten on the backends that prefer it
  (`subpixel_default()`): pass it to flax's `nn.Conv(..., conv_general_dilated=...)`.

  - strided convs go to `strided_conv` (fast gradients);
  - unpadded 1x1 convs at stride 1 become `patch_matmul_conv`'s matrix product. XLA:CPU runs
    them as convolutions up to 30x slower: iDIH's 1x1 output heads (32 -> 1 and 32 -> 3
    channels at 4x256x256) took 34-38 ms forward against 1-4 ms as products, 85-91 ms against
    24-28 ms with their gradients; a 256 -> 64 conv at 4x64x64 (HRNet's bottlenecks) 122 ms
    against 26 ms with XLA's own gradients.
  Anything else (stride 1 with a wider kernel, dilations, groups) is lax's own."""
  args = (lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
          precision, preferred_element_type)
  plain = _plain_2d(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                    feature_group_count, batch_group_count)
  if plain and _pointwise(lhs, rhs, window_strides, padding):
    return _patch_product(lhs, rhs, precision, preferred_element_type)
  if not (plain and len(window_strides) == 2 and max(window_strides) > 1):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, *args)
  return strided_conv(lhs, rhs, tuple(window_strides),
                      _explicit_padding(lhs, rhs, window_strides, padding))


def subpixel_default() -> bool:
  """The backends where `conv_transpose`'s sub-pixel form is the faster one: XLA:CPU. GPUs and
  TPUs have fast native transposed-conv gradients (cuDNN, the TPU compiler) and keep the op."""
  return jax.default_backend() == "cpu"


class ConvTranspose(nn.Module):
  """flax `nn.ConvTranspose` (2-D, same parameters 'kernel' [kh, kw, I, O] and 'bias' [O], same
  outputs), computed by `conv_transpose`: sub-pixel convolutions on CPU, the native op elsewhere.

  Converters, checkpoints and parity tests written for `nn.ConvTranspose` hold unchanged.

  Attributes:
    features: output channels O.
    kernel_size: (kh, kw).
    strides: (s_y, s_x).
    padding: 'SAME', 'VALID' or ((low, high), (low, high)), as `lax.conv_transpose`.
    use_bias: add a learned bias.
    transpose_kernel: the kernel is stored [kh, kw, O, I] and used flipped (the gradient of a
      conv with that kernel), as flax's option.
    impl: 'auto' (`subpixel_default()`), 'subpixel' or 'lax'.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  transpose_kernel: bool = False
  kernel_init: Callable[..., jax.Array] = nn.linear.default_kernel_init
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros
  impl: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, I] -> [B, H', W', features] (sizes as `conv_transpose`)."""
    if self.impl not in ("auto", "subpixel", "lax"):
      raise ValueError(f"ConvTranspose: impl={self.impl!r}; use 'auto', 'subpixel' or 'lax'.")
    in_features = x.shape[-1]
    shape = tuple(self.kernel_size) + ((self.features, in_features) if self.transpose_kernel
                                       else (in_features, self.features))
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    if self.transpose_kernel:  # lax: flip spatially, swap in/out
      kernel = _adjoint_kernel(kernel)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    subpixel = subpixel_default() if self.impl == "auto" else self.impl == "subpixel"
    y = conv_transpose(x, kernel, tuple(self.strides), self.padding, subpixel=subpixel)
    return y + bias if bias is not None else y


def pixel_norm(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Pixelwise feature normalisation: the smart copy-paste paper's LRN, eq. (4).

  Each pixel's feature vector is divided by the root mean square of its channels,
  `x / sqrt(mean_c(x^2) + eps)` (Karras et al., progressive GANs). After it, every pixel has
  mean square 1 over channels (up to eps), whatever the scale of its input.

  Args:
    x: [..., C] features (any float dtype, any range).
    eps: added under the square root; 1e-8 as in the paper, prevents division by zero.

  Returns:
    [..., C] normalised features, the dtype of x (statistics computed in float32).
  """
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
  return y.astype(x.dtype)


class NoiseInjection(nn.Module):
  """StyleGAN noise addition: `x + w[c] * n`, one N(0, 1) image n per example and call.

  The noise image n is [B, H, W, 1], drawn from the module's 'noise' rng stream
  (`self.make_rng('noise')`, so every layer draws its own noise), and broadcast over
  channels; w is a learned per-channel weight [C] initialised to 0, so at initialisation the
  layer is the identity.

  With `deterministic=True` the noise is zero and the layer returns x unchanged: evaluation and
  inference are then reproducible and need no 'noise' rng (the weight is still created, so
  `init(..., deterministic=True)` gives the same parameter tree).

  Attributes:
    dtype: compute dtype of the added noise (the output keeps x's dtype).
    param_dtype: dtype of the weight.
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = False) -> jax.Array:
    """Adds per-channel-scaled single-channel noise.

    Args:
      x: [B, H, W, C] features.
      deterministic: if True, no noise (returns x).

    Returns:
      [B, H, W, C] features, x's dtype.
    """
    weight = self.param("weight", nn.initializers.zeros, (x.shape[-1],), self.param_dtype)
    if deterministic:
      return x
    # Drawn flat then reshaped: with JAX's default (partitionable) threefry the values are
    # bitwise those of a [B, H, W, 1] draw, but XLA:CPU compiles a 1-D draw in ~0.2 s where a
    # small multi-dimensional one takes seconds.
    batch, height, width = x.shape[:-1]
    noise = jax.random.normal(self.make_rng("noise"), (batch * height * width,), jnp.float32)
    noise = noise.reshape(batch, height, width, 1)
    return x + (noise.astype(self.dtype) * weight.astype(self.dtype)).astype(x.dtype)


class ConvAct(nn.Module):
  """conv -> (noise) -> leaky ReLU -> pixel_norm: the smart copy-paste network's layer.

  Padding keeps the sizes simple: a stride-1 conv keeps H x W (symmetric padding
  dilation * (k - 1) // 2 for odd k, i.e. PyTorch `padding=dilation`); a stride-s conv gives
  ceil(H / s) (symmetric padding (k - 1) // 2, i.e. PyTorch `padding=1` for a 3x3 kernel); a
  transposed conv (`transpose=True`) gives s * H ('SAME' in lax's conv_transpose; for a 4x4
  kernel and stride 2, out[2i + 2 - t] += x[i] k[t] per axis, i.e. PyTorch's
  `ConvTranspose2d(k=4, s=2, padding=1)` with the kernel flipped spatially, as flax's
  `ConvTranspose(transpose_kernel=False)` stores it).

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    strides: stride (down-sampling factor, or up-sampling factor when `transpose`).
    dilation: kernel dilation rate (regular convs only).
    transpose: a transposed conv (up-sampling) instead of a conv.
    noise: add `NoiseInjection` after the conv, before the nonlinearity (sub-module 'noise').
    negative_slope: slope of the leaky ReLU for x < 0 (0.2 in the paper).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  transpose: bool = False
  noise: bool = False
  negative_slope: float = 0.2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = False) -> jax.Array:
    """Applies the layer.

    Args:
      x: [B, H, W, C_in] features.
      deterministic: passed to the noise layer (True: no noise).

    Returns:
      [B, H', W', features] with unit mean square per pixel over channels; H' = H for
      stride 1, ceil(H / strides) for a strided conv, H * strides for a transposed conv.
    """
    k = self.kernel_size
    if self.transpose:
      x = ConvTranspose(
          self.features, (k, k), strides=(self.strides, self.strides), padding="SAME",
          dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
    else:
      pad = self.dilation * (k - 1) // 2
      x = nn.Conv(
          self.features, (k, k), strides=self.strides, padding=((pad, pad), (pad, pad)),
          kernel_dilation=self.dilation, dtype=self.dtype, param_dtype=self.param_dtype,
          conv_general_dilated=conv_general_dilated, name="conv")(x)
    if self.noise:
      x = NoiseInjection(dtype=self.dtype, param_dtype=self.param_dtype, name="noise")(
          x, deterministic=deterministic)
    x = nn.leaky_relu(x, negative_slope=self.negative_slope)
    return pixel_norm(x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_tap_kernel_gradient(x: jax.Array, kernel: jax.Array,
                             padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """A stride-1 `lax.conv_general_dilated` (NHWC, HWIO, explicit padding) whose kernel gradient
  is `_tap_products`' one matrix product per tap. The forward pass and the input gradient are
  XLA's own convs, with the padding in the conv's window: XLA:CPU runs a conv whose window has
  no padding ('VALID', e.g. on an input padded beforehand) about 3x slower than the same conv
  with padding in its window, so the input gradient is not formed by padding dY.

  The input gradient is written as a plain forward conv of dY with the kernel flipped and its
  in/out axes swapped (HWIO, padding k - 1 - low / k - 1 - high), not as JAX's transpose of the
  conv (a conv reading the kernel as HWOI). Inside a loop body (`lax.scan`, e.g. HRNet's
  scanned stages) XLA:CPU gives only the HWIO form to its XNNPACK (YNN) kernels and runs the
  HWOI one with its own: four scanned 3x3 convs with 18 channels at 4x64x64, forward and
  gradients, took 103 ms that way and 24 ms this way (36 channels at 4x32x32: 116 and 18 ms;
  outside a loop both forms take 34 ms).

  Args:
    x: [B, H, W, I]; kernel: [kh, kw, I, O]; padding: ((low, high), (low, high)).

  Returns:
    [B, H + low + high - kh + 1, W + low + high - kw + 1, O].
  """
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_NHWC)


def _conv_tap_fwd(x, kernel, padding):
  return conv_tap_kernel_gradient(x, kernel, padding), (x, kernel)


def _conv_tap_bwd(padding, residuals, dy):
  x, kernel = residuals
  (ly, hy), (lx, hx) = padding
  kh, kw = kernel.shape[:2]
  dx = lax.conv_general_dilated(dy, _adjoint_kernel(kernel), (1, 1),
                                ((kh - 1 - ly, kh - 1 - hy), (kw - 1 - lx, kw - 1 - hx)),
                                dimension_numbers=_NHWC)
  xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (ly, hy, 0), (lx, hx, 0), (0, 0, 0)))
  height, width = dy.shape[1:3]
  taps = [(ty, tx, xp[:, ty:ty + height, tx:tx + width])
          for ty in range(kernel.shape[0]) for tx in range(kernel.shape[1])]
  return dx, _tap_products(dy, taps, kernel.shape).astype(kernel.dtype)


conv_tap_kernel_gradient.defvjp(_conv_tap_fwd, _conv_tap_bwd)


def conv_general_dilated_taps(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                              padding: Any, lhs_dilation: Sequence[int] | None = None,
                              rhs_dilation: Sequence[int] | None = None,
                              dimension_numbers: Any = None, feature_group_count: int = 1,
                              batch_group_count: int = 1, precision: Any = None,
                              preferred_element_type: Any = None) -> jax.Array:
  """`conv_general_dilated` (the hook above), with plain stride-1 2-D convs wider than an
  unpadded 1x1 (the hook makes those a matrix product) routed to `conv_tap_kernel_gradient` on
  the backends of `subpixel_default()`: their kernel gradient becomes one matrix product per
  tap. For VGG16's 3x3 layers on FCN's images (287x349x128, 144x175x256) XLA:CPU's own
  kernel gradient is 2.7-3.7x slower; at 573x698x64 they are even."""
  args = (lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
          precision, preferred_element_type)
  plain = (_plain_2d(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                     feature_group_count, batch_group_count)
           and all(s == 1 for s in window_strides)
           and not _pointwise(lhs, rhs, window_strides, padding))
  if not plain:
    return conv_general_dilated(lhs, rhs, window_strides, padding, *args)
  return conv_tap_kernel_gradient(lhs, rhs, _explicit_padding(lhs, rhs, window_strides, padding))


# Collections whose variables `repeated` stacks along the scan axis.
REPEATED_COLLECTIONS = ("params", "batch_stats")


class _RepeatStep(nn.Module):
  """One step of `repeated`'s scan: the carry through `make_block(name='block')`."""
  make_block: Callable[..., nn.Module]
  train: bool

  @nn.compact
  def __call__(self, carry: Any, _: None) -> tuple[Any, None]:
    return self.make_block(name="block")(carry, self.train), None


class _Repeat(nn.Module):
  """`count` blocks `make_block(name=...)`, each called as `block(carry, train)`."""
  make_block: Callable[..., nn.Module]
  count: int
  train: bool


class _RepeatScan(_Repeat):
  """The blocks as one `nn.scan` of `_RepeatStep` ('steps'), variables stacked on axis 0."""

  @nn.compact
  def __call__(self, carry: Any) -> Any:
    steps = nn.scan(_RepeatStep, variable_axes={c: 0 for c in REPEATED_COLLECTIONS},
                    split_rngs={"params": True}, length=self.count)
    return steps(self.make_block, self.train, name="steps")(carry, None)[0]


class _RepeatLoop(_Repeat):
  """The blocks as a Python loop: children '0', '1', ... (what `repeated` stores)."""

  @nn.compact
  def __call__(self, carry: Any) -> Any:
    for i in range(self.count):
      carry = self.make_block(name=str(i))(carry, self.train)
    return carry


def _stack_blocks(count: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
  """Stored variables {'0': tree, '1': tree, ...} -> the scan's {'steps': {'block': stacked}}."""
  def stack(variables: dict[str, Any]) -> dict[str, Any]:
    return {col: {"steps": {"block": jax.tree.map(lambda *leaves: jnp.stack(leaves),
                                                  *(tree[str(i)] for i in range(count)))}}
            if tree else tree for col, tree in variables.items()}
  return stack


def _unstack_blocks(count: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
  """The inverse of `_stack_blocks`."""
  def unstack(variables: dict[str, Any]) -> dict[str, Any]:
    return {col: {str(i): jax.tree.map(lambda leaf, i=i: leaf[i], tree["steps"]["block"])
                  for i in range(count)}
            if tree else tree for col, tree in variables.items()}
  return unstack


def repeated(make_block: Callable[..., nn.Module], count: int, *, train: bool,
             initializing: bool, name: str, scan: bool = True) -> nn.Module:
  """`count` blocks of one architecture applied in sequence, compiled once.

  carry -> block_{count-1}(... block_1(block_0(carry, train), train) ..., train), every block
  `make_block(name=...)` (same shapes, its own variables), as a Python loop over
  `make_block(name=str(i))` would compute and store it: the variables stay children '0', '1',
  ... of the returned module, so converters and checkpoints see one layout either way. With
  `scan` (the default) the blocks run as one `jax.lax.scan` over their variables stacked on a
  new leading axis (`nn.map_variables` stacks them on the way in and splits them, and the
  updated BatchNorm statistics, on the way out): JAX traces and XLA compiles the block once
  instead of `count` times. The result equals the loop's up to float rounding (tested); use
  `scan=False` for the loop itself.

  Args:
    make_block: the block's constructor (e.g. `functools.partial(BasicBlock, 64)`), called
      with `name=`; the block is called as `block(carry, train)` and returns a carry of the
      same structure, shapes and dtypes.
    count: number of blocks (>= 1).
    train: passed to every block; batch statistics ('batch_stats') are mutable when True.
    initializing: the parent's `self.is_initializing()`.
    name: the returned module's name in its parent.
    scan: scan (True) or loop (False).

  Returns:
    An unbound module; call it on the carry.
  """
  if not scan:
    return _RepeatLoop(make_block, count, train, name=name)
  scanned = nn.map_variables(_RepeatScan, REPEATED_COLLECTIONS,
                             trans_in_fn=_stack_blocks(count),
                             trans_out_fn=_unstack_blocks(count), init=initializing,
                             mutable=train)
  return scanned(make_block, count, train, name=name)
