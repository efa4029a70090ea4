"""Tests of cpjax.layers.conv_tap_kernel_gradient and the conv_general_dilated_taps hook: the
same values and derivatives as lax.conv_general_dilated (the reference), the same nn.Conv
parameters and outputs."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import numpy_params
from cpjax import layers


def _close(got, expected):
  scale = float(jnp.max(jnp.abs(expected)))
  np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * scale)


@pytest.mark.parametrize("size,kernel,padding", [
    ((9, 10), 3, ((1, 1), (1, 1))),         # VGG's 3x3 layers
    ((4, 5), 3, ((6, 6), (6, 6))),          # FCN's conv1_1 (padding 100) in small
    ((8, 7), 1, ((0, 0), (0, 0))),          # 1x1
    ((11, 12), 5, ((2, 1), (0, 3))),        # asymmetric padding, a wider kernel
    ((9, 9), 3, ((-1, 0), (1, -1))),        # negative padding crops
])
def test_tap_kernel_gradient_equals_xla(size, kernel, padding):
  """Forward pass, first derivatives (input and kernel) and second derivatives (the input
  gradient's norm differentiated by input and kernel) equal lax.conv_general_dilated's to float
  rounding."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)), jnp.float32)
  lax_conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = lambda x, k: layers.conv_tap_kernel_gradient(x, k, padding)  # noqa: E731

  def penalty(conv):
    return lambda x, k: jnp.sum(jnp.square(jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, k))))(x)))

  _close(ours(x, k), lax_conv(x, k))
  for a, b in zip(jax.grad(lambda x, k: jnp.sum(jnp.sin(ours(x, k))), (0, 1))(x, k),
                  jax.grad(lambda x, k: jnp.sum(jnp.sin(lax_conv(x, k))), (0, 1))(x, k)):
    _close(a, b)
  for a, b in zip(jax.grad(penalty(ours), (0, 1))(x, k), jax.grad(penalty(lax_conv), (0, 1))(x, k)):
    _close(a, b)


def test_gradients_inside_a_scan_are_plain_hwio_convs_and_products():
  """The gradient of scanned `conv_tap_kernel_gradient`s (HRNet's scanned stages) lowers to
  convs that all read NHWC with an HWIO kernel: the forward conv and the input gradient (a conv
  of dY with the flipped, in/out-swapped kernel); the kernel gradient is matrix products.
  JAX's own transpose of a conv reads the kernel as HWOI (and its kernel gradient is a conv
  over the whole image), forms that XLA:CPU runs on its slow kernels inside a loop body.
  lax's own conv, lowered the same way, shows those forms, so the check can fail."""
  def lowered_convs(conv):
    def loss(x, kernels):
      step = lambda carry, k: (jnp.tanh(conv(carry, k)), None)  # noqa: E731
      return jnp.sum(jax.lax.scan(step, x, kernels)[0])
    x, kernels = jnp.ones((2, 8, 8, 3)), jnp.ones((2, 3, 3, 3, 3))
    text = jax.jit(jax.grad(loss, (0, 1))).lower(x, kernels).as_text()
    return re.findall(r"dim_numbers = (\[[^\]]*\]x\[[^\]]*\])", text)

  padding = ((1, 1), (1, 1))
  ours = lowered_convs(lambda x, k: layers.conv_tap_kernel_gradient(x, k, padding))
  assert ours == ["[b, 0, 1, f]x[0, 1, i, o]"] * 2
  plain = lowered_convs(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")))
  assert "[b, 0, 1, f]x[0, 1, o, i]" in plain


@pytest.mark.parametrize("kw", [dict(strides=1, padding="SAME"), dict(strides=1, padding=100),
                                dict(strides=2, padding="SAME"), dict(kernel_dilation=2),
                                dict(strides=1, padding="VALID")])
def test_taps_hook_keeps_nn_conv_parameters_outputs_and_gradients(kw):
  """nn.Conv(conv_general_dilated=layers.conv_general_dilated_taps) has nn.Conv's parameters,
  outputs and parameter gradients for stride-1, strided and dilated convs alike."""
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 9, 8, 3)), jnp.float32)
  plain = nn.Conv(5, (3, 3), **kw)
  params = numpy_params(jax.eval_shape(plain.init, jax.random.key(0), x))
  hooked = nn.Conv(5, (3, 3), conv_general_dilated=layers.conv_general_dilated_taps, **kw)
  assert jax.tree.map(jnp.shape, jax.eval_shape(hooked.init, jax.random.key(0), x)) == \
      jax.tree.map(jnp.shape, params)
  _close(hooked.apply(params, x), plain.apply(params, x))
  loss = lambda m: lambda p: jnp.sum(jnp.cos(m.apply(p, x)))  # noqa: E731
  for a, b in zip(jax.tree.leaves(jax.grad(loss(hooked))(params)),
                  jax.tree.leaves(jax.grad(loss(plain))(params))):
    _close(a, b)
