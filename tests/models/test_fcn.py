"""Tests of cpjax.models.fcn: output geometry, crop offsets (pixel alignment), bilinear upscore,
zero-initialised score layers.

Networks are 1-2 channels wide: geometry does not depend on width, and XLA:CPU compiles them
in about a second.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import numpy_params

from cpjax.models import fcn

_TINY = dict(widths=(2, 2, 2, 2, 2), fc_width=3)


@pytest.mark.parametrize("variant", fcn.VARIANTS)
def test_output_size_equals_input_size(variant):
  """Scores come back at the input size for 1x1 ... 500x375 (the crops always fit)."""
  model = fcn.FCN(num_classes=3, variant=variant, **_TINY)
  sizes = [(1, 1), (5, 17), (31, 32), (33, 65), (100, 7), (224, 224), (500, 375)]
  sizes += [tuple(s) for s in np.random.default_rng(0).integers(1, 300, size=(3, 2))]
  for size in sizes:
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    out = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.key(0), x), x)
    assert out.shape == (2, *size, 3) and out.dtype == jnp.float32, (variant, size)


def _center_tap(shape):
  """Kernel [k, k, C_in, C_out] copying input channel 0 to every output channel (centre tap)."""
  k = np.zeros(shape, np.float32)
  k[shape[0] // 2, shape[1] // 2, 0, :] = 1.0
  return k


def _identity_path_params(shapes, path):
  """Parameters that make the FCN an identity from the input's channel 0 to the scores along
  one path (score layer `path` on, the other score layers off); upscore kernels stay bilinear."""
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])
  for name, conv in params["vgg"].items():
    conv["kernel"] = _center_tap(conv["kernel"].shape)
  # Lift everything above the zero padding so that ReLU is the identity and max-pooling over a
  # window that mixes padding and image picks the image (its values are >= 127.5 - 123 > 0).
  params["vgg"]["conv1_1"]["bias"][:] = 1000.0
  for name in ("fc6", "fc7"):
    params[name]["kernel"] = _center_tap(params[name]["kernel"].shape)
  params[path]["kernel"] = _center_tap(params[path]["kernel"].shape)
  for name in params:
    if name.startswith("upscore"):
      size = params[name]["kernel"].shape[0]
      params[name]["kernel"] = fcn.bilinear_kernel(size, 1)
  return {"params": params}


@pytest.mark.parametrize("variant", fcn.VARIANTS)
def test_crop_offsets_align_scores_with_input_pixels(variant):
  """Every score path is pixel-aligned with the input (the crop offsets 19 / 5, 27 / 9, 31 /
  17, 33 are right): with centre-tap identity convs, ramps in x and y come out as the same
  ramps. A 2x2 max-pool on an increasing ramp picks the later pixel and on a decreasing one the
  earlier, shifting the ramp by +d and -d; the sum of the two measured shifts is the
  misalignment, 0 here, and an offset off by one pixel would make it 2."""
  model = fcn.FCN(num_classes=1, variant=variant, widths=(1,) * 5, fc_width=1)
  size = 256
  u = np.arange(size, dtype=np.float32)
  ramp = 0.5 + 0.5 * u / size  # in [0.5, 1): 255 * ramp - Caffe mean > 0
  images = np.stack([np.broadcast_to(r[None, :], (size, size)) for r in (ramp, ramp[::-1])])
  images = np.concatenate([images, images.transpose(0, 2, 1)])  # x ramps, then y ramps
  images = jnp.asarray(np.repeat(images[..., None], 3, axis=-1))
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)
  apply = jax.jit(model.apply)
  paths = ["score_fr", "score_pool4", "score_pool3", "score_pool2"]
  for path in paths[:fcn.VARIANTS.index(variant) + 1]:
    scores = np.asarray(apply(_identity_path_params(shapes, path), images))[..., 0]
    inner = slice(80, size - 80)  # past the border effects of the padding
    profiles = [scores[0, size // 2, inner], scores[1, size // 2, inner],
                scores[2, inner, size // 2], scores[3, inner, size // 2]]
    slope = 255 * 0.5 / size
    p = u[inner]
    for inc, dec in ((profiles[0], profiles[1]), (profiles[2], profiles[3])):
      # ramp[::-1][u] = ramp[size - 1 - u], so inc(p) - dec(p) = slope (2p + s_inc + s_dec
      # - (size - 1)), whatever the constant offsets (Caffe mean, biases) are.
      shift_sum = (inc - dec) / slope + (size - 1) - 2 * p
      np.testing.assert_allclose(shift_sum, 0.0, atol=0.02, err_msg=f"{variant} {path}")


def test_bilinear_kernel_hand_values():
  """Size 4 (stride 2): triangle (1/4, 3/4, 3/4, 1/4) in each axis on the channel diagonal,
  zero across channels; size 3: (1/2, 1, 1/2)."""
  k = fcn.bilinear_kernel(4, 2)
  tri = np.array([0.25, 0.75, 0.75, 0.25])
  np.testing.assert_allclose(k[:, :, 0, 0], np.outer(tri, tri))
  np.testing.assert_allclose(k[:, :, 1, 1], np.outer(tri, tri))
  assert np.all(k[:, :, 0, 1] == 0) and np.all(k[:, :, 1, 0] == 0)
  np.testing.assert_allclose(fcn.bilinear_kernel(3, 1)[:, 1, 0, 0], [0.5, 1.0, 0.5])


@pytest.mark.parametrize("stride", [2, 8, 32])
def test_upscore_layers_are_bilinear_interpolation(stride):
  """A transposed conv with `bilinear_kernel` (size 2s, stride s, configured as the FCN's
  upscore layers) is bilinear interpolation: away from the borders its output shifted by s/2 equals jax.image.resize(..., 'linear')
  (half-pixel centres), on random scores."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 6, 7, 2)), jnp.float32)
  layer = nn.ConvTranspose(2, (2 * stride, 2 * stride), strides=(stride, stride),
                           padding="VALID", use_bias=False, transpose_kernel=True)
  up = np.asarray(layer.apply({"params": {"kernel": fcn.bilinear_kernel(2 * stride, 2)}}, x))
  assert up.shape == (1, 5 * stride + 2 * stride, 6 * stride + 2 * stride, 2)
  ref = np.asarray(jax.image.resize(x, (1, 6 * stride, 7 * stride, 2), "linear"))
  half = stride // 2
  inner = (slice(None), slice(stride, 5 * stride), slice(stride, 6 * stride))
  np.testing.assert_allclose(up[:, half:half + 6 * stride, half:half + 7 * stride][inner],
                             ref[inner], atol=1e-5)


def test_initialisation_zero_scores_bilinear_upscores():
  """Score layers (score_fr, score_pool*) start at zero, so an untrained FCN-4s scores every
  class 0 everywhere, while the trunk and fc layers are random; every upscore layer starts as
  `bilinear_kernel` of its size (4, 4, 4 and 8 in FCN-4s)."""
  model = fcn.FCN(num_classes=3, variant="4s", **_TINY)
  x = jnp.asarray(np.random.default_rng(2).uniform(size=(1, 20, 24, 3)), jnp.float32)
  with jax.threefry_partitionable(False):  # compiles faster on CPU (as the trainer does)
    variables = jax.jit(model.init)(jax.random.key(0), x)
  params = variables["params"]
  for name in ("score_fr", "score_pool4", "score_pool3", "score_pool2"):
    assert not np.any(np.asarray(params[name]["kernel"])), name
  for name, size in (("upscore2", 4), ("upscore_pool4", 4), ("upscore_pool3", 4),
                     ("upscore4", 8)):
    np.testing.assert_array_equal(np.asarray(params[name]["kernel"]),
                                  fcn.bilinear_kernel(size, 3))
  assert np.std(np.asarray(params["fc6"]["kernel"])) > 0
  np.testing.assert_array_equal(np.asarray(jax.jit(model.apply)(variables, x)), 0.0)


def test_dropout_only_in_training():
  """train=True applies dropout (needs a 'dropout' rng; two keys give different scores);
  train=False is deterministic."""
  model = fcn.FCN(num_classes=2, variant="32s", **_TINY)
  x = jnp.asarray(np.random.default_rng(3).uniform(size=(1, 16, 16, 3)), jnp.float32)
  params = numpy_params(jax.eval_shape(model.init, jax.random.key(0), x))["params"]
  fwd = jax.jit(lambda k, train: model.apply({"params": params}, x, train=train,
                                             rngs={"dropout": k}), static_argnums=1)
  a, b = fwd(jax.random.key(1), True), fwd(jax.random.key(2), True)
  assert not np.allclose(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(fwd(jax.random.key(1), False)),
                                np.asarray(fwd(jax.random.key(2), False)))
