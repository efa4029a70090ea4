"""Copy-and-Paste Networks: context matching vs a NumPy reference, layer specs of the released
network, identity-initialised alignment, resizing vs OpenCV, padding."""
from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import numpy_params
from cpjax.models import video_cpn


def _numpy_context_matching(tf, rf, tv, rv):
  """The paper's eqs. (context matching) written with loops, on maps already at feature size.

  tf [B, h, w, C], rf [B, T, h, w, C], tv [B, h, w, 1], rv [B, T, h, w, 1] (binary).
  """
  b, t, h, w, c = rf.shape
  out_agg = np.zeros((b, h, w, c))
  out_cmask = np.zeros((b, h, w, 1))
  for i in range(b):
    g = np.zeros(t)
    for r in range(t):
      joint = tv[i] * rv[i, r]
      n = joint.sum()
      g[r] = (joint * tf[i] * rf[i, r]).sum() / (n * c) if n >= 1e-4 else 0.0
    for y in range(h):
      for x in range(w):
        vis = rv[i, :, y, x, 0]
        s = g * vis
        e = np.exp(s - s.max()) * vis
        total = e.sum()
        weights = e / (total + (1.0 if total < 1e-4 else 0.0))
        out_agg[i, y, x] = (weights[:, None] * rf[i, :, y, x]).sum(0)
        out_cmask[i, y, x, 0] = 1.0 - (weights * vis).sum()
  return out_agg, out_cmask


def test_context_matching_matches_numpy_reference():
  """Aggregated features and c_mask equal the loop reference, with one reference that shares
  no visible pixel with the target (similarity 0) and pixels no reference sees (c_mask 1).
  Visibility maps are given at feature size, so the resize + threshold is the identity."""
  r = np.random.default_rng(0)
  b, t, h, w, c = 2, 3, 4, 5, 6
  tf = r.normal(size=(b, h, w, c)).astype(np.float32)
  rf = r.normal(size=(b, t, h, w, c)).astype(np.float32)
  tv = (r.random((b, h, w, 1)) > 0.3).astype(np.float32)
  rv = (r.random((b, t, h, w, 1)) > 0.4).astype(np.float32)
  rv[0, 1] = 1.0 - tv[0]            # no joint visibility with the target
  rv[1, :, 0, 0] = 0.0              # a pixel no reference sees
  got = jax.jit(video_cpn.context_matching)(tf, rf, tv, rv)
  want_agg, want_cmask = _numpy_context_matching(tf, rf, tv, rv)
  np.testing.assert_allclose(np.asarray(got["decoder_input"][..., :c]), tf, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got["decoder_input"][..., c:2 * c]), want_agg, atol=1e-5)
  np.testing.assert_allclose(np.asarray(got["c_mask"]), want_cmask, atol=1e-6)
  assert float(got["similarity"][0, 1]) == 0.0
  assert float(got["c_mask"][1, 0, 0, 0]) == 1.0


def test_absent_reference_slots_change_nothing():
  """Padding the reference set with `present=False` slots (as the tool does) gives the output
  of the unpadded set, even where all present scores are negative."""
  r = np.random.default_rng(1)
  tf = r.normal(size=(1, 4, 4, 3)).astype(np.float32)
  rf = -np.abs(r.normal(size=(1, 2, 4, 4, 3))).astype(np.float32) * np.sign(tf)[:, None]
  tv = np.ones((1, 4, 4, 1), np.float32)
  rv = np.ones((1, 2, 4, 4, 1), np.float32)
  pad = lambda x: np.concatenate([x, r.random(x.shape).astype(np.float32)], axis=1)  # pylint: disable=unnecessary-lambda-assignment
  fn = jax.jit(video_cpn.context_matching)
  want = fn(tf, rf, tv, rv)
  got = fn(tf, pad(rf), tv, pad(rv), jnp.array([True, True, False, False]))
  assert np.all(np.asarray(want["similarity"]) < 0)
  np.testing.assert_allclose(np.asarray(got["decoder_input"]), np.asarray(want["decoder_input"]),
                             atol=1e-6)


@pytest.mark.parametrize("size", [(7, 9), (40, 56)])
def test_resize_bilinear_matches_opencv(size):
  """Half-pixel bilinear without antialiasing (PyTorch align_corners=False) = cv2 INTER_LINEAR,
  down- and up-sampling."""
  image = np.random.default_rng(2).random((20, 28, 2)).astype(np.float32)
  got = np.asarray(jax.jit(video_cpn.resize_bilinear, static_argnums=1)(image[None], size))[0]
  want = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_pad_to_multiple_is_centred_and_cropped_back():
  """Reference pad_divide_by: 13 -> 16 pads 1 before and 2 after; 21 -> 24 pads 1 and 2."""
  x = jnp.ones((2, 13, 21, 1))
  padded, pads = video_cpn.pad_to_multiple(x, 8)
  assert padded.shape == (2, 16, 24, 1) and pads == (1, 2, 1, 2)
  assert float(padded[0, 0, 5, 0]) == 0.0 and float(padded[0, 1, 1, 0]) == 1.0
  np.testing.assert_array_equal(np.asarray(video_cpn.crop_padding(padded, pads)), np.asarray(x))


# Parameter shapes of the released state dict (weight.pth), as flax [kh, kw, in, out].
_RELEASED = {
    "align_encoder/conv12": (5, 5, 4, 64), "align_encoder/conv4b": (3, 3, 256, 256),
    "align_regressor/conv45": (3, 3, 512, 512), "align_regressor/conv5b": (3, 3, 512, 512),
    "align_regressor/fc": (512, 6),
    "encoder/conv12": (5, 5, 4, 64), "encoder/value3": (3, 3, 128, 128),
    "decoder/conv4": (3, 3, 257, 257), "decoder/convA4_4": (3, 3, 257, 257),
    "decoder/conv3b": (3, 3, 257, 128), "decoder/conv32": (3, 3, 128, 64),
    "decoder/conv21": (5, 5, 64, 3),
}


def test_paper_network_has_the_released_layers():
  """The default network's parameter tree has the released names and shapes (29 convs + fc;
  no conv6a/conv6b with the released conv5 reuse) and its forward pass the documented shapes."""
  net = video_cpn.CPNet()
  args = (jnp.zeros((1, 2, 28, 28, 256)), jnp.zeros((1, 2, 64, 80, 3)), jnp.zeros((1, 2, 64, 80, 1)),
          jnp.zeros((1, 64, 80, 3)), jnp.zeros((1, 64, 80, 1)))
  shapes = jax.eval_shape(net.init, jax.random.key(0), *args)["params"]
  kernels = {f"{m}/{l}": v["kernel"].shape for m, layers in shapes.items()
             for l, v in layers.items()}
  assert len(kernels) == 7 + 5 + 5 + 13
  for name, shape in _RELEASED.items():
    assert kernels[name] == shape, name
  assert "conv6a" not in shapes["align_regressor"]
  out = jax.eval_shape(net.apply, {"params": shapes}, *args)
  assert out["pred"].shape == (1, 64, 80, 3) and out["c_mask"].shape == (1, 16, 20, 1)
  assert out["theta"].shape == (1, 2, 2, 3)


@pytest.fixture(scope="module")
def small_net():
  net = video_cpn.CPNet(align_widths=(4, 4, 8, 8, 8, 8, 8), align_size=32,
                               encoder_widths=(4, 4, 8, 8, 8), decoder_widths=(8, 8, 4, 4),
                               dilations=(2,))
  args = (jnp.zeros((2, 3, 4, 4, 8)), jnp.zeros((2, 3, 24, 32, 3)), jnp.zeros((2, 3, 24, 32, 1)),
          jnp.zeros((2, 24, 32, 3)), jnp.zeros((2, 24, 32, 1)))
  shapes = jax.eval_shape(net.init, jax.random.key(0), *args)["params"]
  params = numpy_params(shapes)
  params["align_regressor"]["fc"]["kernel"] = jnp.zeros_like(
      params["align_regressor"]["fc"]["kernel"])
  params["align_regressor"]["fc"]["bias"] = jnp.array([1.0, 0, 0, 0, 1.0, 0])
  return net, params


def test_identity_alignment_copies_references_and_keeps_visible_pixels(small_net):
  """With the regressor's identity initialisation, theta = I and the aligned references are the
  references; the completed frame equals the input outside the hole."""
  net, params = small_net
  r = np.random.default_rng(3)
  refs = jnp.asarray(r.random((2, 3, 24, 32, 3)), jnp.float32)
  ref_holes = jnp.asarray(r.random((2, 3, 24, 32, 1)) > 0.8, jnp.float32)
  frame = jnp.asarray(r.random((2, 24, 32, 3)), jnp.float32)
  hole = jnp.zeros((2, 24, 32, 1)).at[:, 8:16, 10:20].set(1.0)

  def run(p, refs, ref_holes, frame, hole):
    b, t = refs.shape[:2]
    feats = net.apply({"params": p}, refs.reshape(b * t, 24, 32, 3),
                      ref_holes.reshape(b * t, 24, 32, 1),
                      method=video_cpn.CPNet.encode_alignment)
    return net.apply({"params": p}, feats.reshape(b, t, *feats.shape[1:]), refs, ref_holes,
                     frame, hole)

  out = jax.jit(run)(params, refs, ref_holes, frame, hole)
  np.testing.assert_allclose(np.asarray(out["theta"]),
                             np.broadcast_to(np.eye(2, 3), (2, 3, 2, 3)), atol=1e-6)
  np.testing.assert_allclose(np.asarray(out["aligned"]), np.asarray(refs), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out["aligned_visible"]), 1.0 - np.asarray(ref_holes))
  outside = np.asarray(1.0 - hole, bool)[..., 0]
  np.testing.assert_allclose(np.asarray(out["comp"])[outside], np.asarray(frame)[outside],
                             atol=1e-6)
