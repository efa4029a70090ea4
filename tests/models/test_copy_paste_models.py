"""Tests of the smart copy-paste networks: CopyPasteGenerator and the global + local Critic.

Parameters are filled from NumPy after `jax.eval_shape(init)`: on XLA:CPU each small
`jax.random` draw of a new shape takes seconds to compile, and these tests check the networks,
not flax's initialisers. Tiny widths and 32-64 px images keep the file to a few seconds.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import numpy_params
from cpjax import losses
from cpjax.models.copy_paste import CopyPasteGenerator
from cpjax.models.critic import Critic, local_box


def _count(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def _conv(k: int, c_in: int, c_out: int) -> int:
  """Parameters of a k x k conv with bias."""
  return k * k * c_in * c_out + c_out


# Generator

TINY = CopyPasteGenerator(widths=(8, 16, 32, 64))
_gen = jax.jit(lambda v, x, k: TINY.apply(v, x, rngs={"noise": k}))
_gen_det = jax.jit(lambda v, x: TINY.apply(v, x, deterministic=True))


def _gen_params(shape=(2, 32, 32, 4)):
  x = jnp.zeros(shape)
  return numpy_params(jax.eval_shape(lambda: TINY.init(jax.random.key(0), x, deterministic=True)))


def _inputs(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


@pytest.mark.parametrize("shape", [(2, 32, 32, 4), (1, 48, 64, 4)])
def test_generator_output_shape(shape):
  """[B, H, W, 4] -> [B, H, W, 3] finite residuals for square and non-square multiples of 8."""
  params = _gen_params(shape)
  out = _gen(params, _inputs(shape), jax.random.key(1))
  assert out.shape == shape[:3] + (3,)
  assert out.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("height,width", [(30, 32), (32, 36)])
def test_generator_rejects_sizes_not_multiple_of_factor(height, width):
  """A size that is not a multiple of 2**levels (8) raises ValueError naming it and the 8."""
  x = jnp.zeros((1, height, width, 4))
  with pytest.raises(ValueError, match=rf"{height}x{width}.*multiples of 8"):
    jax.eval_shape(lambda: TINY.init(jax.random.key(0), x, deterministic=True))


def test_generator_param_count_default_config():
  """The default generator's parameter count equals the count derived from the paper's layer
  list (3x3 convs, 4x4 transposed convs, per-channel noise weights, U-Net concatenation)."""
  w = (64, 128, 256, 512)
  expected = _conv(3, 4, w[0])                                             # encoder_0 (stem)
  for l in range(1, 4):
    expected += _conv(3, w[l - 1], w[l]) + _conv(3, w[l], w[l])            # encoder_l
  expected += 7 * _conv(3, w[3], w[3])                                     # dilated_0..6
  for l in range(1, 4):
    expected += _conv(4, w[l], w[l - 1]) + w[l - 1]                        # upconv + noise
    expected += _conv(3, 2 * w[l - 1], w[l - 1])                           # conv on concat
  expected += _conv(3, w[0], 3)                                            # to_rgb
  variables = jax.eval_shape(lambda: CopyPasteGenerator().init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 4)), deterministic=True))
  assert _count(variables) == expected == 25_471_555


def test_generator_parameter_names():
  """The parameter tree reads like the architecture: encoder_0..3, dilated_0..6,
  decoder_3..1 (upconv with noise, conv), to_rgb; only the decoder's upconvs have noise."""
  variables = jax.eval_shape(lambda: CopyPasteGenerator().init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 4)), deterministic=True))
  p = variables["params"]
  expected = ({f"encoder_{i}" for i in range(4)} | {f"dilated_{i}" for i in range(7)}
              | {f"decoder_{i}" for i in range(1, 4)} | {"to_rgb"})
  assert set(p) == expected
  assert set(p["encoder_2"]) == {"down", "conv"}
  assert set(p["decoder_1"]) == {"upconv", "conv"}
  assert set(p["decoder_1"]["upconv"]) == {"conv", "noise"}
  assert p["decoder_1"]["upconv"]["conv"]["kernel"].shape == (4, 4, 128, 64)
  noisy = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(p)
           if "noise" in jax.tree_util.keystr(k)]
  assert len(noisy) == 3 and all("upconv" in name for name in noisy)


def test_generator_bottleneck_is_one_eighth_with_512_maps():
  """With the default widths a 64x64 input reaches 8x8x512 after the encoder and through all
  7 dilated convs (512 px -> 64 px with 512 maps in the paper), and returns to 64x64."""
  gen = CopyPasteGenerator()
  x = jnp.zeros((1, 64, 64, 4))
  variables = jax.eval_shape(lambda: gen.init(jax.random.key(0), x, deterministic=True))
  out, state = jax.eval_shape(lambda v: gen.apply(
      v, x, deterministic=True, capture_intermediates=True, mutable=["intermediates"]),
      variables)
  inter = state["intermediates"]
  assert inter["encoder_3"]["__call__"][0].shape == (1, 8, 8, 512)
  for i in range(7):
    assert inter[f"dilated_{i}"]["__call__"][0].shape == (1, 8, 8, 512)
  assert inter["decoder_3"]["__call__"][0].shape == (1, 16, 16, 256)
  assert inter["decoder_1"]["__call__"][0].shape == (1, 64, 64, 64)
  assert out.shape == (1, 64, 64, 3)


def test_generator_noise_and_deterministic():
  """Noise keys change the output (noise weights non-zero); deterministic=True is repeatable
  and equals the noisy model with its noise weights zeroed (zero noise)."""
  params = _gen_params()
  x = _inputs((2, 32, 32, 4), seed=1)
  a = np.asarray(_gen(params, x, jax.random.key(1)))
  b = np.asarray(_gen(params, x, jax.random.key(2)))
  assert np.abs(a - b).max() > 1e-3
  det = np.asarray(_gen_det(params, x))
  np.testing.assert_array_equal(det, np.asarray(_gen_det(params, x)))
  silent = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.zeros_like(v) if "noise" in jax.tree_util.keystr(path) else v, params)
  np.testing.assert_allclose(np.asarray(_gen(silent, x, jax.random.key(1))), det,
                             rtol=1e-5, atol=1e-6)


def test_generator_output_layer_is_linear():
  """Scaling to_rgb's kernel and bias by 3 scales the residuals by 3: no activation or
  normalisation after the last conv (residuals of any sign and scale)."""
  params = _gen_params()
  x = _inputs((2, 32, 32, 4), seed=2)
  base = np.asarray(_gen_det(params, x))
  scaled = jax.tree_util.tree_map_with_path(
      lambda path, v: 3 * v if "to_rgb" in jax.tree_util.keystr(path) else v, params)
  np.testing.assert_allclose(np.asarray(_gen_det(scaled, x)), 3 * base, rtol=1e-4, atol=1e-5)
  assert base.min() < 0 < base.max()


def test_generator_threads_dtypes():
  """dtype=bfloat16 computes (and returns) bf16 while parameters stay float32."""
  gen = CopyPasteGenerator(widths=(8, 16), dilations=(2,), dtype=jnp.bfloat16)
  x = jnp.zeros((1, 16, 16, 4))
  out, variables = jax.eval_shape(
      lambda: gen.init_with_output(jax.random.key(0), x, deterministic=True))
  assert out.dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


# Critic

TINY_CRITIC = Critic(global_widths=(8, 16), local_widths=(8, 16), dense_width=16)
_critic = jax.jit(TINY_CRITIC.apply)


def _critic_inputs(batch=2, size=32, seed=0):
  r = np.random.default_rng(seed)
  image = jnp.asarray(r.uniform(size=(batch, size, size, 3)), jnp.float32)
  mask = np.zeros((batch, size, size, 1), np.float32)
  # Local box: side 8 * 1.25 = 10 centred on (7, 8), i.e. rows 2..12, cols 3..13.
  mask[:, 4:10, 4:12] = 1.0
  composite = jnp.asarray(r.uniform(size=(batch, size, size, 3)), jnp.float32)
  condition = jnp.concatenate([composite, jnp.asarray(mask)], axis=-1)
  return image, condition, jnp.asarray(mask)


def _critic_params(inputs, seed=0):
  return numpy_params(jax.eval_shape(lambda: TINY_CRITIC.init(jax.random.key(0), *inputs)),
                       seed)


def test_local_box_hand_values():
  """The local box is square, centred on the mask's box enlarged by the margin, at least
  min_side, at most the shorter side, and shifted inside the image (hand-worked cases)."""
  m = np.zeros((32, 32, 1), np.float32)
  m[4:10, 4:12] = 1  # box 6 x 8 -> side 10 around centre (7, 8)
  np.testing.assert_allclose(local_box(jnp.asarray(m)), [2, 3, 12, 13])
  m = np.zeros((32, 32, 1), np.float32)
  m[0:2, 28:32] = 1  # side 4 * 1.25 = 5 -> 8 (min_side); centre (1, 30) shifted inside
  np.testing.assert_allclose(local_box(jnp.asarray(m)), [0, 24, 8, 32])
  # Empty mask on a 32 x 48 image: whole image, capped to the shorter side, centred.
  np.testing.assert_allclose(local_box(jnp.zeros((32, 48, 1))), [0, 8, 32, 40])


def test_critic_output_shape_and_tiny_sizes():
  """Tiny critic on 32 px: [B] float32 scores; local_size None -> 16 px patches, so the local
  dense layer sees 4x4x16 maps and the global one 8x8x16 (one stride-2 conv per width)."""
  inputs = _critic_inputs(batch=3)
  params = _critic_params(inputs)
  p = params["params"]
  assert p["global_branch"]["dense"]["kernel"].shape == (8 * 8 * 16, 16)
  assert p["local_branch"]["dense"]["kernel"].shape == (4 * 4 * 16, 16)
  assert p["output"]["kernel"].shape == (32, 1)
  scores = _critic(params, *inputs)
  assert scores.shape == (3,) and scores.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(scores)))


def test_critic_far_pixels_reach_score_only_through_global_branch():
  """Changing image and condition pixels far outside the local box (rows/cols >= 20; box is
  rows 2..12, cols 3..13) changes the score, but not once the global branch's dense weights
  are zero; pixels inside the box still change it then (the local branch sees them)."""
  image, condition, mask = _critic_inputs()
  params = _critic_params((image, condition, mask))
  far_image = image.at[:, 20:].set(0.0).at[:, :, 20:].set(1.0)
  far_condition = condition.at[:, 20:, :, :3].set(0.5)
  base = np.asarray(_critic(params, image, condition, mask))
  assert np.abs(np.asarray(_critic(params, far_image, far_condition, mask)) - base).min() > 1e-4

  no_global = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.zeros_like(v)
      if "global_branch" in jax.tree_util.keystr(path) and "dense" in jax.tree_util.keystr(path)
      and path[-1].key == "kernel" else v, params)
  base = np.asarray(_critic(no_global, image, condition, mask))
  np.testing.assert_allclose(np.asarray(_critic(no_global, far_image, far_condition, mask)),
                             base, rtol=1e-6, atol=1e-7)
  inside = image.at[:, 5:9, 6:10].set(0.0)
  assert np.abs(np.asarray(_critic(no_global, inside, condition, mask)) - base).min() > 1e-5


def test_critic_depends_on_condition():
  """Same image and mask, a different composite in the condition: different scores (a
  conditional critic)."""
  image, condition, mask = _critic_inputs()
  params = _critic_params((image, condition, mask))
  other = condition.at[..., :3].set(1.0 - condition[..., :3])
  diff = np.abs(np.asarray(_critic(params, image, other, mask))
                - np.asarray(_critic(params, image, condition, mask)))
  assert diff.min() > 1e-4


def test_critic_scores_examples_independently():
  """Changing example 1 leaves example 0's score bit-identical (no batch statistics), as the
  per-sample gradient penalty requires."""
  image, condition, mask = _critic_inputs()
  params = _critic_params((image, condition, mask))
  a = np.asarray(_critic(params, image, condition, mask))
  b = np.asarray(_critic(params, image.at[1].set(0.0), condition, mask))
  assert a[0] == b[0] and a[1] != b[1]


def test_critic_has_no_batchnorm():
  """Only a 'params' collection (no batch_stats) holding only conv/dense kernels and biases."""
  variables = jax.eval_shape(lambda: Critic().init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 4)),
      jnp.zeros((1, 64, 64, 1))))
  assert set(variables) == {"params"}
  for path, _ in jax.tree_util.tree_leaves_with_path(variables):
    name = jax.tree_util.keystr(path).lower()
    assert path[-1].key in ("kernel", "bias"), name
    assert "norm" not in name and "batch" not in name and "bn" not in name


def test_critic_param_count_default_at_512():
  """Default critic at 512 px: Iizuka's stacks (6 global, 5 local 5x5 convs), 8x8x512 maps
  flattened into dense 1024 in both branches, then Dense(1): count derived by hand."""
  gw, lw = (64, 128, 256, 512, 512, 512), (64, 128, 256, 512, 512)
  expected = 0
  for widths in (gw, lw):
    c_in = 7
    for c in widths:
      expected += _conv(5, c_in, c)
      c_in = c
    expected += 8 * 8 * 512 * 1024 + 1024
  expected += 2 * 1024 + 1
  variables = jax.eval_shape(lambda: Critic().init(
      jax.random.key(0), jnp.zeros((1, 512, 512, 3)), jnp.zeros((1, 512, 512, 4)),
      jnp.zeros((1, 512, 512, 1))))
  assert _count(variables) == expected == 95_401_217


def test_critic_gradient_penalty_is_finite_and_trainable(rng):
  """The gradient penalty through the critic (crop included) is finite and positive, and its
  gradient w.r.t. the critic's parameters (double backprop) is finite and non-zero."""
  image, condition, mask = _critic_inputs()
  params = _critic_params((image, condition, mask))
  fake = jnp.clip(image + 0.1, 0.0, 1.0)

  def gp(p):
    return losses.gradient_penalty(lambda y: TINY_CRITIC.apply(p, y, condition, mask),
                                   image, fake, rng)

  value, grads = jax.jit(jax.value_and_grad(gp))(params)
  assert np.isfinite(float(value)) and float(value) > 0
  leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert sum(np.abs(g).sum() for g in leaves) > 0


@pytest.mark.parametrize("mode", ["input", "none"])
def test_generator_noise_ablation_modes(mode):
  """'input' feeds one noise image as a 5th input channel (stem kernel has 5 input channels, no
  noise weights in the decoder, output changes with the key); 'none' is deterministic."""
  gen = CopyPasteGenerator(widths=(4, 8), dilations=(2,), noise=mode)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 8, 8, 4)), jnp.float32)
  params = gen.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, x)["params"]
  assert params["encoder_0"]["conv"]["kernel"].shape[2] == (5 if mode == "input" else 4)
  assert "noise" not in params["decoder_1"]["upconv"]
  params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero weights everywhere
  y1 = gen.apply({"params": params}, x, rngs={"noise": jax.random.key(2)})
  y2 = gen.apply({"params": params}, x, rngs={"noise": jax.random.key(3)})
  assert (mode == "input") == (not np.allclose(y1, y2))
