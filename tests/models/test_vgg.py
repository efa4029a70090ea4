"""Tests of cpjax.models.vgg: VGG16 trunk geometry, ceil-mode pooling, padding, preprocessing.

Shapes are checked with `jax.eval_shape` (no compile); numerics against NumPy references.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import numpy_params
from cpjax.models import vgg


def _np_pool(x, ceil_mode):
  """2x2/2 max-pool in NumPy, windows clipped to the input (PyTorch semantics, padding 0)."""
  batch, height, width, chans = x.shape
  rnd = math.ceil if ceil_mode else math.floor
  out_h, out_w = rnd(height / 2), rnd(width / 2)
  out = np.empty((batch, out_h, out_w, chans), x.dtype)
  for i in range(out_h):
    for j in range(out_w):
      out[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(1, 2))
  return out


@pytest.mark.parametrize("ceil_mode", [True, False])
@pytest.mark.parametrize("size", [(4, 6), (5, 7), (7, 2)])
def test_max_pool_matches_numpy(ceil_mode, size):
  """max_pool_2x2 equals a NumPy loop over windows, in ceil and floor mode, odd sizes too;
  values are negative so that a zero-padded (rather than -inf-padded) edge would show."""
  x = -np.abs(np.random.default_rng(0).normal(size=(2, *size, 3))).astype(np.float32) - 1.0
  got = np.asarray(vgg.max_pool_2x2(jnp.asarray(x), ceil_mode))
  np.testing.assert_array_equal(got, _np_pool(x, ceil_mode))


def test_parameter_names_and_count():
  """13 convs named conv1_1 ... conv5_3 with VGG16's widths: 14,714,688 parameters, the
  published size of VGG16's convolutional part (torchvision `vgg16().features`)."""
  shapes = jax.eval_shape(vgg.VGG16().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  params = shapes["params"]
  assert tuple(params) == vgg.CONV_NAMES
  assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
  assert params["conv5_3"]["kernel"].shape == (3, 3, 512, 512)
  assert sum(np.prod(p.shape) for p in jax.tree.leaves(params)) == 14_714_688
  assert sorted(vgg.TORCHVISION_FEATURE_INDEX.values()) == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21,
                                                            24, 26, 28]


@pytest.mark.parametrize("size", [32, 45, 100, 227])
def test_output_shapes_plain_and_fcn_geometry(size):
  """Plain VGG (padding 1, floor pooling) halves with floor at each pool; FCN's geometry
  (padding 100, ceil pooling) gives conv1 at H + 198 and pool5 at ceil-halved 5 times."""
  x = jax.ShapeDtypeStruct((1, size, size + 3, 3), jnp.float32)
  for pad, ceil_mode in ((1, False), (100, True)):
    model = vgg.VGG16(first_padding=pad, ceil_mode=ceil_mode)
    out = jax.eval_shape(lambda v, x, m=model: m.apply(v, x),
                         jax.eval_shape(model.init, jax.random.key(0), x), x)
    h, w = size + 2 * pad - 2, size + 3 + 2 * pad - 2
    assert out["conv1_2"].shape == (1, h, w, 64)
    rnd = math.ceil if ceil_mode else math.floor
    for block, width in ((1, 64), (2, 128), (3, 256), (4, 512), (5, 512)):
      h, w = rnd(h / 2), rnd(w / 2)
      assert out[f"pool{block}"].shape == (1, h, w, width), (pad, block)
    assert set(out) == set(vgg.CONV_NAMES) | {f"pool{b}" for b in range(1, 6)}


def test_conv1_1_padding_and_relu_match_numpy():
  """conv1_1 with first_padding=3 equals ReLU(zero-padded 3x3 cross-correlation + bias)
  computed in NumPy (the layout PyTorch weights are converted to)."""
  model = vgg.VGG16(first_padding=3, ceil_mode=True, widths=(8, 4, 4, 4, 4))
  x = np.random.default_rng(1).normal(size=(1, 5, 6, 3)).astype(np.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(x))
  variables = numpy_params(shapes)
  got = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x))["conv1_1"])
  kernel = np.asarray(variables["params"]["conv1_1"]["kernel"], np.float64)
  bias = np.asarray(variables["params"]["conv1_1"]["bias"], np.float64)
  xp = np.pad(x[0].astype(np.float64), ((3, 3), (3, 3), (0, 0)))
  out_h, out_w = xp.shape[0] - 2, xp.shape[1] - 2
  ref = np.zeros((out_h, out_w, 8))
  for dy in range(3):
    for dx in range(3):
      ref += xp[dy:dy + out_h, dx:dx + out_w] @ kernel[dy, dx]
  np.testing.assert_allclose(got[0], np.maximum(ref + bias, 0.0), rtol=1e-4, atol=1e-4)
  # Far from the image the padded input is 0: the output is ReLU(bias) there.
  np.testing.assert_allclose(got[0, 0, 0], np.maximum(bias, 0.0), atol=1e-6)


def test_caffe_preprocess_hand_values():
  """caffe_preprocess swaps RGB -> BGR, scales to 0..255 and subtracts the Caffe BGR mean."""
  rgb = jnp.asarray([[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
  expected = np.asarray([[0.0 - 104.00698793, 127.5 - 116.66876762, 255.0 - 122.67891434],
                         [255.0 - 104.00698793, 0.0 - 116.66876762, 0.0 - 122.67891434]])
  np.testing.assert_allclose(np.asarray(vgg.caffe_preprocess(rgb)), expected, rtol=1e-6)


@pytest.mark.parametrize("ceil_mode", [True, False])
@pytest.mark.parametrize("size", [(6, 8), (5, 7)])
def test_max_pool_gradient_matches_torch(ceil_mode, size):
  """The gradient of max_pool_2x2 equals torch.nn.functional.max_pool2d's, ties included: the
  input is rounded to a few values, so most windows hold several equal maxima, and both give
  the whole gradient to the first of them (row-major)."""
  torch = pytest.importorskip("torch")
  r = np.random.default_rng(2)
  x = np.round(r.uniform(0, 2, size=(2, *size, 3))).astype(np.float32)   # values 0, 1, 2
  x[0, :2, :2] = 1.0                                                     # an all-equal window
  g = r.normal(size=(2, *[-(-s // 2) if ceil_mode else s // 2 for s in size], 3))
  g = g.astype(np.float32)
  ours = jax.grad(lambda x: jnp.sum(vgg.max_pool_2x2(x, ceil_mode) * g))(jnp.asarray(x))
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
  y = torch.nn.functional.max_pool2d(xt, 2, 2, ceil_mode=ceil_mode)
  (y * torch.from_numpy(g.transpose(0, 3, 1, 2).copy())).sum().backward()
  np.testing.assert_array_equal(np.asarray(ours), xt.grad.numpy().transpose(0, 2, 3, 1))
