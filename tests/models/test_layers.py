"""Tests of cpjax.layers: pixel_norm (paper eq. 4), NoiseInjection (StyleGAN), ConvAct,
repeated (scanned blocks).

Parameters are filled from NumPy after `jax.eval_shape(init)`: on XLA:CPU each small
`jax.random` draw of a new shape takes seconds to compile, and these tests check layers, not
initialisers.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import numpy_params
from cpjax import layers


def _leaky(x, slope=0.2):
  return np.where(x >= 0, x, slope * x)


def _np_pixel_norm(x):
  return x / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + 1e-8)


# pixel_norm


def test_pixel_norm_matches_numpy():
  """pixel_norm equals x / sqrt(mean_c(x^2) + 1e-8) computed in float64 NumPy, to 1e-6."""
  x = (3.0 * np.random.default_rng(0).normal(size=(2, 5, 6, 7))).astype(np.float32)
  expected = _np_pixel_norm(x.astype(np.float64))
  np.testing.assert_allclose(np.asarray(layers.pixel_norm(jnp.asarray(x))), expected,
                             rtol=1e-6, atol=1e-6)


def test_pixel_norm_unit_mean_square_per_pixel():
  """After pixel_norm every pixel's mean square over channels is 1, whatever its scale
  (scales 1e-1 .. 1e3 per pixel; far below, eps = 1e-8 starts to matter), so it normalises
  over channels, not over space or batch."""
  r = np.random.default_rng(1)
  scale = 10.0**r.uniform(-1, 3, size=(3, 4, 4, 1))
  x = jnp.asarray(r.normal(size=(3, 4, 4, 16)) * scale, jnp.float32)
  ms = np.mean(np.square(np.asarray(layers.pixel_norm(x))), axis=-1)
  np.testing.assert_allclose(ms, 1.0, rtol=1e-5)


def test_pixel_norm_zero_and_dtype():
  """A zero feature vector stays zero (eps prevents 0/0), and bf16 in gives bf16 out."""
  y = layers.pixel_norm(jnp.zeros((1, 2, 2, 3)))
  assert np.all(np.asarray(y) == 0.0)
  assert layers.pixel_norm(jnp.ones((1, 2, 2, 3), jnp.bfloat16)).dtype == jnp.bfloat16


# NoiseInjection


def _noise_out(x, weight, key, deterministic=False):
  variables = {"params": {"weight": jnp.asarray(weight, jnp.float32)}}
  rngs = {} if deterministic else {"noise": key}
  return layers.NoiseInjection().apply(variables, x, deterministic=deterministic, rngs=rngs)


def test_noise_injection_zero_init_is_identity(rng):
  """The weight is initialised to zeros [C], so a fresh layer returns its input exactly."""
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 5)), jnp.float32)
  variables = layers.NoiseInjection().init({"params": rng, "noise": rng}, x)
  assert variables["params"]["weight"].shape == (5,)
  assert np.all(np.asarray(variables["params"]["weight"]) == 0.0)
  out = layers.NoiseInjection().apply(variables, x, rngs={"noise": jax.random.key(7)})
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_noise_injection_one_image_broadcast_over_channels(rng):
  """With weight w, out - x = w[c] * n with one N(0, 1) image n per example shared by all
  channels: (out - x) / w is identical across channels, ~N(0, 1), and differs per example."""
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 32, 32, 3)), jnp.float32)
  w = np.array([1.0, -2.0, 0.5], np.float32)
  n = (np.asarray(_noise_out(x, w, rng)) - np.asarray(x)) / w
  np.testing.assert_allclose(n[..., 1], n[..., 0], atol=1e-5)
  np.testing.assert_allclose(n[..., 2], n[..., 0], atol=1e-5)
  assert abs(n[..., 0].mean()) < 0.1 and abs(n[..., 0].std() - 1.0) < 0.1
  assert not np.allclose(n[0, ..., 0], n[1, ..., 0])


def test_noise_injection_deterministic_adds_nothing():
  """deterministic=True returns the input unchanged even with a non-zero weight, and needs no
  'noise' rng (it would raise if it tried to draw)."""
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 8, 3)), jnp.float32)
  out = _noise_out(x, [1.0, 2.0, 3.0], None, deterministic=True)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_noise_injection_keys():
  """The same key reproduces the noise; a different key gives different noise."""
  x = jnp.zeros((1, 8, 8, 2))
  w = [1.0, 1.0]
  a = np.asarray(_noise_out(x, w, jax.random.key(1)))
  b = np.asarray(_noise_out(x, w, jax.random.key(1)))
  c = np.asarray(_noise_out(x, w, jax.random.key(2)))
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).mean() > 0.5  # independent N(0, 1): mean |a - c| ~ 1.13


# ConvAct


def _np_conv(x, k, b, stride, dilation):
  """Direct NumPy conv with symmetric padding dilation * (kh - 1) // 2."""
  kh = k.shape[0]
  pad = dilation * (kh - 1) // 2
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out_h = (xp.shape[1] - dilation * (kh - 1) - 1) // stride + 1
  out_w = (xp.shape[2] - dilation * (kh - 1) - 1) // stride + 1
  out = np.zeros((x.shape[0], out_h, out_w, k.shape[-1]))
  for i in range(out_h):
    for j in range(out_w):
      for di in range(kh):
        for dj in range(kh):
          out[:, i, j] += xp[:, i * stride + di * dilation, j * stride + dj * dilation] @ k[di, dj]
  return out + b


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_conv_act_matches_numpy(stride, dilation):
  """ConvAct = pixel_norm(leaky_relu_0.2(conv)) with symmetric padding, against a direct
  NumPy conv: checks padding (PyTorch padding=1 / =dilation), stride, dilation and slope."""
  x = np.random.default_rng(5).normal(size=(2, 6, 6, 3)).astype(np.float32)
  module = layers.ConvAct(4, strides=stride, dilation=dilation)
  params = numpy_params(jax.eval_shape(module.init, jax.random.key(0), jnp.asarray(x)))
  out = np.asarray(module.apply(params, jnp.asarray(x)))
  p = params["params"]["conv"]
  ref = _np_conv(x.astype(np.float64), np.asarray(p["kernel"], np.float64),
                 np.asarray(p["bias"], np.float64), stride, dilation)
  expected = _np_pixel_norm(_leaky(ref))
  assert out.shape == (2, 6 // stride, 6 // stride, 4)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_conv_act_transpose_with_noise_matches_numpy():
  """The 4x4 stride-2 transposed conv doubles the size and follows out[2i + 2 - t] += x[i] k[t]
  per axis (PyTorch ConvTranspose2d(4, 2, padding=1) with a flipped kernel); with
  deterministic=True the noise layer adds nothing; the noise weight is a child 'noise'."""
  x = np.random.default_rng(6).normal(size=(1, 3, 4, 2)).astype(np.float32)
  module = layers.ConvAct(3, kernel_size=4, strides=2, transpose=True, noise=True)
  shapes = jax.eval_shape(lambda k: module.init(k, jnp.asarray(x), deterministic=True),
                          jax.random.key(0))
  assert shapes["params"]["noise"]["weight"].shape == (3,)
  params = numpy_params(shapes)
  out = np.asarray(module.apply(params, jnp.asarray(x), deterministic=True))
  k = np.asarray(params["params"]["conv"]["kernel"], np.float64)
  b = np.asarray(params["params"]["conv"]["bias"], np.float64)
  full = np.zeros((1, 2 * 3 + 4, 2 * 4 + 4, 3))  # out index + 2 offset, room for the borders
  for i in range(3):
    for j in range(4):
      for ti in range(4):
        for tj in range(4):
          full[0, 2 * i + 2 - ti + 2, 2 * j + 2 - tj + 2] += x[0, i, j] @ k[ti, tj]
  ref = full[:, 2:2 + 6, 2:2 + 8] + b
  assert out.shape == (1, 6, 8, 3)
  np.testing.assert_allclose(out, _np_pixel_norm(_leaky(ref)), rtol=1e-4, atol=1e-4)


def test_conv_act_threads_dtypes():
  """dtype sets the compute (output) dtype, param_dtype the parameters' dtype."""
  module = layers.ConvAct(4, noise=True, dtype=jnp.bfloat16, param_dtype=jnp.float32)
  x = jnp.zeros((1, 4, 4, 2))
  out, variables = jax.eval_shape(
      lambda k: module.init_with_output(k, x, deterministic=True), jax.random.key(0))
  assert out.dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


@pytest.mark.parametrize("size,kernel,stride,padding", [
    ((5, 6), 4, 2, "SAME"),                 # copy-paste generator, DIH / iDIH decoders
    ((5, 6), 4, 2, ((2, 2), (2, 2))),        # PyTorch ConvTranspose2d(4, 2, padding=1)
    ((1, 1), 4, 2, ((3, 3), (3, 3))),        # ConvTranspose2d(4, 2, padding=0): 1 -> 4 px
    ((3, 4), 4, 2, ((3, 3), (3, 3))),
    ((3, 5), 16, 8, "VALID"),               # FCN upscore8 / upscore32
    ((2, 3), 64, 32, "VALID"),
    ((4, 4), 3, 2, ((1, 2), (0, 1))),        # odd kernel, asymmetric padding
    ((4, 3), 2, 3, "VALID"),                 # kernel smaller than the stride: gaps
])
def test_conv_transpose_subpixel_equals_lax(size, kernel, stride, padding):
  """The sub-pixel form gives lax.conv_transpose's outputs (shape and values to float rounding)
  and the same gradients, for the layers cpjax uses and for odd cases (odd kernels, asymmetric
  padding, a kernel smaller than the stride)."""
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 5)), jnp.float32)

  def loss(fn):
    return lambda x, k: jnp.sum(jnp.sin(fn(x, k)))

  lax_fn = lambda x, k: layers.conv_transpose(x, k, (stride, stride), padding, subpixel=False)  # noqa: E731
  sub_fn = lambda x, k: layers.conv_transpose(x, k, (stride, stride), padding)  # noqa: E731
  expected, got = lax_fn(x, k), sub_fn(x, k)
  assert got.shape == expected.shape
  scale = float(jnp.max(jnp.abs(expected)))
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)
  for g_expected, g_got in zip(jax.grad(loss(lax_fn), (0, 1))(x, k),
                               jax.grad(loss(sub_fn), (0, 1))(x, k)):
    np.testing.assert_allclose(g_got, g_expected, rtol=0,
                               atol=1e-5 * float(jnp.max(jnp.abs(g_expected))))


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_conv_transpose_module_is_flax_conv_transpose(transpose_kernel):
  """layers.ConvTranspose has flax nn.ConvTranspose's parameter tree and outputs, in both of its
  implementations: checkpoints and converters written for flax's layer hold unchanged."""
  x = jnp.asarray(np.random.default_rng(8).normal(size=(2, 4, 5, 3)), jnp.float32)
  kw = dict(features=6, kernel_size=(4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
            transpose_kernel=transpose_kernel)
  flax_module = nn.ConvTranspose(**kw)
  params = numpy_params(jax.eval_shape(flax_module.init, jax.random.key(0), x))
  expected = flax_module.apply(params, x)
  for impl in ("subpixel", "lax"):
    module = layers.ConvTranspose(**kw, impl=impl)
    assert jax.tree.map(jnp.shape, jax.eval_shape(module.init, jax.random.key(0), x)) == \
        jax.tree.map(jnp.shape, params)
    np.testing.assert_allclose(module.apply(params, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,kernel,stride,padding", [
    ((8, 10), 4, 2, ((1, 1), (1, 1))),       # DIH / iDIH encoder blocks
    ((7, 9), 4, 2, ((0, 0), (0, 0))),        # the unpadded last encoder block
    ((9, 8), 3, 2, ((1, 1), (1, 1))),        # copy-paste 'down', HRNet stride-2 convs
    ((11, 12), 5, 2, ((2, 2), (2, 2))),      # critic, CPN encoders
    ((9, 10), 3, (2, 1), ((1, 1), (0, 2))),  # unequal strides, asymmetric padding
])
def test_strided_conv_gradients_equal_xla(size, kernel, stride, padding):
  """strided_conv's forward and first and second derivatives (a gradient penalty differentiates
  the input gradient again) equal lax.conv_general_dilated's to float rounding."""
  strides = stride if isinstance(stride, tuple) else (stride, stride)
  rng = np.random.default_rng(9)
  x = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)), jnp.float32)
  lax_conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = lambda x, k: layers.strided_conv(x, k, strides, padding)  # noqa: E731

  def penalty(conv):   # WGAN-GP style: norm of the input gradient, differentiated by k
    def critic(x, k):
      return jnp.sum(jnp.tanh(conv(x, k)))
    return lambda x, k: jnp.sum(jnp.square(jax.grad(critic)(x, k)))

  def close(got, expected):
    scale = float(jnp.max(jnp.abs(expected)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * scale)

  close(ours(x, k), lax_conv(x, k))
  for a, b in zip(jax.grad(lambda x, k: jnp.sum(jnp.sin(ours(x, k))), (0, 1))(x, k),
                  jax.grad(lambda x, k: jnp.sum(jnp.sin(lax_conv(x, k))), (0, 1))(x, k)):
    close(a, b)
  for a, b in zip(jax.grad(penalty(ours), (0, 1))(x, k), jax.grad(penalty(lax_conv), (0, 1))(x, k)):
    close(a, b)


def test_conv_hook_routes_only_plain_strided_convs():
  """nn.Conv(conv_general_dilated=layers.conv_general_dilated) keeps flax's parameters and
  outputs, for strided, stride-1 and dilated convs alike."""
  x = jnp.asarray(np.random.default_rng(10).normal(size=(2, 9, 8, 3)), jnp.float32)
  for kw in (dict(strides=2, padding=((1, 1), (1, 1))), dict(strides=2, padding="SAME"),
             dict(strides=1, padding="SAME"), dict(kernel_dilation=2, padding="SAME")):
    plain = nn.Conv(5, (3, 3), **kw)
    params = numpy_params(jax.eval_shape(plain.init, jax.random.key(0), x))
    hooked = nn.Conv(5, (3, 3), conv_general_dilated=layers.conv_general_dilated, **kw)
    np.testing.assert_allclose(hooked.apply(params, x), plain.apply(params, x), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("kernel,size", [(7, (9, 11)), (1, (5, 6))])
def test_patch_matmul_conv_equals_the_convolution(kernel, size):
  """FCN's fc6 (7x7) and fc7 / score (1x1) as one matrix product of patches: the outputs and the
  input and kernel gradients of lax.conv_general_dilated ('VALID', stride 1), to float
  rounding."""
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, *size, 6)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kernel, kernel, 6, 5)), jnp.float32)
  dims = ("NHWC", "HWIO", "NHWC")
  ours = lambda x, k: layers.patch_matmul_conv(x, k, (1, 1), "VALID", dimension_numbers=dims)  # noqa: E731
  ref = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=dims)  # noqa: E731
  np.testing.assert_allclose(ours(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.grad(lambda x, k: jnp.sum(jnp.sin(ours(x, k))), (0, 1))(x, k),
                  jax.grad(lambda x, k: jnp.sum(jnp.sin(ref(x, k))), (0, 1))(x, k)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_patch_matmul_conv_leaves_other_convs_to_lax():
  """As nn.Conv's hook, padded and strided convs keep nn.Conv's outputs (lax's convolution)."""
  x = jnp.asarray(np.random.default_rng(6).normal(size=(1, 9, 8, 3)), jnp.float32)
  for kw in (dict(padding="SAME"), dict(padding="VALID", strides=2)):
    plain = nn.Conv(4, (3, 3), **kw)
    params = numpy_params(jax.eval_shape(plain.init, jax.random.key(0), x))
    hooked = nn.Conv(4, (3, 3), conv_general_dilated=layers.patch_matmul_conv, **kw)
    np.testing.assert_allclose(hooked.apply(params, x), plain.apply(params, x), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("hook", [layers.conv_general_dilated, layers.conv_general_dilated_taps])
def test_conv_hooks_make_unpadded_1x1_convs_a_matrix_product(hook):
  """Both hooks turn an unpadded stride-1 1x1 nn.Conv into a dot (no convolution in the
  forward or backward jaxpr) with nn.Conv's outputs and parameter gradients; a padded 1x1 conv
  stays a convolution, with nn.Conv's outputs."""
  x = jnp.asarray(np.random.default_rng(11).normal(size=(2, 9, 8, 6)), jnp.float32)
  plain = nn.Conv(4, (1, 1))
  params = numpy_params(jax.eval_shape(plain.init, jax.random.key(0), x))
  hooked = nn.Conv(4, (1, 1), conv_general_dilated=hook)
  loss = lambda m: lambda p: jnp.sum(jnp.cos(m.apply(p, x)))  # noqa: E731
  np.testing.assert_allclose(hooked.apply(params, x), plain.apply(params, x), rtol=1e-5,
                             atol=1e-5)
  for a, b in zip(jax.tree.leaves(jax.grad(loss(hooked))(params)),
                  jax.tree.leaves(jax.grad(loss(plain))(params))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))
  primitives = str(jax.make_jaxpr(jax.value_and_grad(loss(hooked)))(params))
  assert "dot_general" in primitives and "conv_general_dilated" not in primitives
  padded = nn.Conv(4, (1, 1), padding=1, conv_general_dilated=hook)
  assert "conv_general_dilated" in str(jax.make_jaxpr(padded.apply)(params, x))
  np.testing.assert_allclose(padded.apply(params, x), nn.Conv(4, (1, 1), padding=1).apply(
      params, x), rtol=1e-5, atol=1e-5)


def test_batch_norm_matches_torch_batchnorm2d():
  """layers.BatchNorm in training mode = torch.nn.BatchNorm2d: outputs and running averages
  (the running variance averages the unbiased batch variance, n = 2 x 3 x 2 = 12 values per
  channel here); in evaluation mode both normalise with the running averages."""
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(11).normal(2.0, 3.0, size=(2, 3, 2, 5)).astype(np.float32)
  reference = torch.nn.BatchNorm2d(5, eps=1e-5, momentum=0.1)
  with torch.no_grad():
    reference.weight.uniform_(0.5, 1.5)
    reference.bias.uniform_(-0.5, 0.5)
  variables = {"params": {"scale": reference.weight.detach().numpy(),
                          "bias": reference.bias.detach().numpy()},
               "batch_stats": {"mean": np.zeros(5, np.float32), "var": np.ones(5, np.float32)}}
  expected = reference.train()(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
  out, updated = layers.BatchNorm(momentum=0.9).apply(variables, jnp.asarray(x),
                                                      mutable=["batch_stats"])
  np.testing.assert_allclose(out, expected.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(updated["batch_stats"]["mean"], reference.running_mean.numpy(),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(updated["batch_stats"]["var"], reference.running_var.numpy(),
                             rtol=1e-6, atol=1e-6)
  variables["batch_stats"] = updated["batch_stats"]
  evaluated = layers.BatchNorm(use_running_average=True).apply(variables, jnp.asarray(x))
  expected = reference.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
  np.testing.assert_allclose(evaluated, expected.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_batch_norm_gradients_match_torch_and_autodiff():
  """batch_norm_train's hand-written backward pass: dx, dscale, dbias equal torch.nn.BatchNorm2d's
  autograd in training mode; with the mean and var outputs also in the loss, first and second
  derivatives equal JAX's differentiation of the same forward formulas."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(12)
  x = rng.normal(1.5, 2.0, size=(3, 4, 5, 6)).astype(np.float32)
  weights = rng.normal(size=x.shape).astype(np.float32)
  scale = rng.uniform(0.5, 1.5, size=6).astype(np.float32)
  bias = rng.uniform(-0.5, 0.5, size=6).astype(np.float32)

  reference = torch.nn.BatchNorm2d(6, eps=1e-5).train()
  with torch.no_grad():
    reference.weight.copy_(torch.from_numpy(scale))
    reference.bias.copy_(torch.from_numpy(bias))
  x_t = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
  torch.sum(torch.tanh(reference(x_t)) * torch.from_numpy(weights.transpose(0, 3, 1, 2))).backward()
  got = jax.grad(lambda x, s, b: jnp.sum(jnp.tanh(layers.batch_norm_train(x, s, b, 1e-5)[0])
                                         * weights), (0, 1, 2))(x, scale, bias)
  for a, b in zip(got, (x_t.grad.numpy().transpose(0, 2, 3, 1), reference.weight.grad.numpy(),
                        reference.bias.grad.numpy())):
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * float(np.max(np.abs(b))))

  def loss(norm):
    def value(x, s, b):
      y, mean, var = norm(x, s, b, 1e-5)
      return jnp.sum(jnp.tanh(y) * weights) + jnp.sum(jnp.sin(mean)) + jnp.sum(jnp.sqrt(var))
    return value

  ours, theirs = loss(layers.batch_norm_train), loss(layers.batch_norm_train.fun)
  for a, b in zip(jax.grad(ours, (0, 1, 2))(x, scale, bias),
                  jax.grad(theirs, (0, 1, 2))(x, scale, bias)):
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * float(jnp.max(jnp.abs(b))))
  penalty = lambda f: lambda x, s, b: jnp.sum(jnp.square(jax.grad(f)(x, s, b)))  # noqa: E731
  for a, b in zip(jax.grad(penalty(ours), (0, 1, 2))(x, scale, bias),
                  jax.grad(penalty(theirs), (0, 1, 2))(x, scale, bias)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(jnp.max(jnp.abs(b))))


# repeated


class _AffineBN(nn.Module):
  """A toy block: x @ W + b, then layers.BatchNorm (train: batch statistics), plus x."""
  features: int

  @nn.compact
  def __call__(self, x, train):
    y = nn.Dense(self.features, name="dense")(x)
    return x + layers.BatchNorm(use_running_average=not train, name="bn")(y)


def _np_blocks(x, params, stats, count, train):
  """The blocks in float64 NumPy: (output, new running means)."""
  means = []
  for i in range(count):
    p, s = params[str(i)], stats[str(i)]["bn"]
    y = x @ np.asarray(p["dense"]["kernel"], np.float64) + np.asarray(p["dense"]["bias"])
    mean, var = (y.mean(0), y.var(0)) if train else (np.asarray(s["mean"]), np.asarray(s["var"]))
    means.append(0.9 * np.asarray(s["mean"]) + 0.1 * y.mean(0))
    y = (y - mean) / np.sqrt(var + 1e-5) * np.asarray(p["bn"]["scale"])
    y = y + np.asarray(p["bn"]["bias"])
    x = x + y
  return x, means


class _Stack(nn.Module):
  scan: bool

  @nn.compact
  def __call__(self, x, train):
    return layers.repeated(lambda name: _AffineBN(4, name=name), 3, train=train,
                           initializing=self.is_initializing(), name="blocks", scan=self.scan)(x)


@pytest.mark.parametrize("train", [False, True])
def test_repeated_scan_equals_the_loop_and_numpy(train):
  """`repeated` with scan stores the loop's variables ('blocks/0', '1', '2': each block its own),
  and both compute the blocks in order, block i with its own parameters, as float64 NumPy does;
  in train mode each block's running mean is updated in its own place."""
  x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
  shapes = jax.eval_shape(lambda: _Stack(True).init(jax.random.key(0), x, False))
  assert jax.tree.structure(shapes) == jax.tree.structure(
      jax.eval_shape(lambda: _Stack(False).init(jax.random.key(0), x, False)))
  assert sorted(shapes["params"]["blocks"]) == ["0", "1", "2"]
  variables = numpy_params(shapes, seed=1)
  variables["batch_stats"] = jax.tree_util.tree_map_with_path(   # variances > 0
      lambda path, v: jnp.abs(v) + 0.5 if path[-1].key == "var" else v, variables["batch_stats"])
  params, stats = variables["params"]["blocks"], variables["batch_stats"]["blocks"]
  expected, means = _np_blocks(x.astype(np.float64), params, stats, 3, train)
  for scan in (True, False):
    out, state = _Stack(scan).apply(variables, x, train, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5, rtol=1e-5)
    for i in range(3):
      new = np.asarray(state["batch_stats"]["blocks"][str(i)]["bn"]["mean"])
      np.testing.assert_allclose(new, means[i] if train else stats[str(i)]["bn"]["mean"],
                                 atol=1e-5, rtol=1e-5)
