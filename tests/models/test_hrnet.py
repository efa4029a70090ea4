"""Tests of cpjax.models.hrnet: foreground-aware HRNetV2 + OCR (iDIH-HRNet's backbone).

References: parameter counts from a pure-Python count of the layer specification, itself pinned
to the published counts of the HRNet-Image-Classification networks; NumPy float64 re-computations
of the mask fusion, the stem, a transition, the multi-resolution fusions and the whole OCR head
from the captured intermediate outputs; BatchNorm's running-average update rule.

Forward passes use W18s on 60x44 inputs (not multiples of 32) with parameters filled from NumPy
(jax.random initialisers of ~300 shapes take long to compile on XLA:CPU); the compiled eval and
train passes are shared through module-scoped fixtures. W18 and W32 are only shape-evaluated.
The scanned-versus-loops comparisons compile with XLA's expensive LLVM passes off too
(`conftest.jit_unoptimized`: the same float32 operations; the narrow network's two gradients
compile in 17 s each instead of 24 s at the entry points' level).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jit_unoptimized
from cpjax.models import hrnet

B, H, W = 2, 60, 44          # not multiples of 32: ceil(60 / 4) = 15, ceil(44 / 4) = 11
OH, OW = 15, 11


# Pure-Python parameter count of the layer specification.


def _conv(cin, cout, k, bias=False, bn_only=False):
  return 0 if bn_only else k * k * cin * cout + (cout if bias else 0)


def _bn(c, bn_only=False):
  return 2 * c  # scale + bias, or running mean + var


def _conv_bn(cin, cout, k, bias=False, bn_only=False):
  return _conv(cin, cout, k, bias, bn_only) + _bn(cout)


def _basic(c, bn_only=False):
  return 2 * _conv_bn(c, c, 3, bn_only=bn_only)


def _bottleneck(cin, planes, bn_only=False):
  n = (_conv_bn(cin, planes, 1, bn_only=bn_only) + _conv_bn(planes, planes, 3, bn_only=bn_only)
       + _conv_bn(planes, 4 * planes, 1, bn_only=bn_only))
  return n + (_conv_bn(cin, 4 * planes, 1, bn_only=bn_only) if cin != 4 * planes else 0)


def _trunk_count(width, blocks, modules, bn_only=False):
  """HRNetV2 trunk: stem, layer1, transitions, stages with branches and fusions."""
  n = _conv_bn(3, 64, 3, bn_only=bn_only) + _conv_bn(64, 64, 3, bn_only=bn_only)
  n += _bottleneck(64, 64, bn_only) + (blocks - 1) * _bottleneck(256, 64, bn_only)
  prev = [256]
  for branches, num_modules in zip((2, 3, 4), modules):
    ch = [width * 2**i for i in range(branches)]
    n += _conv_bn(prev[0], ch[0], 3, bn_only=bn_only) if prev[0] != ch[0] else 0
    n += _conv_bn(prev[-1], ch[-1], 3, bn_only=bn_only)  # the new branch, one stride-2 step
    for _ in range(num_modules):
      n += sum(blocks * _basic(c, bn_only) for c in ch)
      for i in range(branches):
        for j in range(branches):
          if j > i:
            n += _conv_bn(ch[j], ch[i], 1, bn_only=bn_only)
          elif j < i:
            n += (i - j - 1) * _conv_bn(ch[j], ch[j], 3, bn_only=bn_only)
            n += _conv_bn(ch[j], ch[i], 3, bn_only=bn_only)
    prev = ch
  return n


def _classification_head_count(width):
  """HRNet-Image-Classification's head: incre bottlenecks (32, 64, 128, 256 planes), 3 stride-2
  3x3 convs with bias, 1x1 conv 1024 -> 2048 with bias, BN after each, fc 2048 -> 1000."""
  ch, planes = [width * 2**i for i in range(4)], [32, 64, 128, 256]
  n = sum(_bottleneck(c, p) for c, p in zip(ch, planes))
  n += sum(_conv_bn(4 * planes[i], 4 * planes[i + 1], 3, bias=True) for i in range(3))
  return n + _conv_bn(1024, 2048, 1, bias=True) + 2048 * 1000 + 1000


def _ocr_count(width, bn_only=False):
  """OCR head: 3x3 conv (bias) 15w -> 128, f_pixel/f_object 2 x (1x1 + BN), f_down, f_up,
  conv_bn_dropout 256 -> 128."""
  n = _conv_bn(15 * width, 128, 3, bias=True, bn_only=bn_only)
  n += 2 * (_conv_bn(128, 64, 1, bn_only=bn_only) + _conv_bn(64, 64, 1, bn_only=bn_only))
  n += _conv_bn(128, 64, 1, bn_only=bn_only) + _conv_bn(64, 128, 1, bn_only=bn_only)
  return n + _conv_bn(256, 128, 1, bn_only=bn_only)


_SPEC_ARGS = {"w18s": (18, 2, (1, 3, 2)), "w18": (18, 4, (1, 4, 3)), "w32": (32, 4, (1, 4, 3))}


def test_counter_reproduces_published_classification_counts():
  """The pure-Python trunk count plus the classification head gives exactly the published
  parameter counts of hrnet_w18_small_v2, hrnetv2_w18, hrnetv2_w32 (15,597,464, 21,299,004,
  41,232,680: osmr/imgclsmob's weight-count assertions for the HRNet-Image-Classification
  models, README 15.6M / 21.3M / 41.2M), so the trunk count below is right."""
  published = {"w18s": 15_597_464, "w18": 21_299_004, "w32": 41_232_680}
  for name, (width, blocks, modules) in _SPEC_ARGS.items():
    total = _trunk_count(width, blocks, modules) + _classification_head_count(width)
    assert total == published[name], name


@functools.lru_cache(maxsize=None)
def _shapes(width, dtype=jnp.float32, hw=(64, 64)):
  """Shape-evaluated init (no compute); cached: tracing W32 takes seconds."""
  model = hrnet.HRNetOCR(width, dtype=dtype)
  image, mask = jnp.zeros((1,) + hw + (3,), dtype), jnp.zeros((1,) + hw + (1,), dtype)
  return jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, image, mask, False))


def _size(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("width", ["w18s", "w18", "w32"])
def test_parameter_counts(width):
  """Per scope: trunk 'hrnet' (W18s 3,860,720 / W18 9,562,260 / W32 29,305,536), OCR head
  (386,304 / 386,304 / 628,224), mask fusion 641 (576 kernel + 64 bias + 1 scale) equal the
  spec count; batch_stats hold a mean and a variance per BatchNorm channel."""
  variables = _shapes(width)
  params, stats = variables["params"], variables["batch_stats"]
  assert set(params) == {"mask_conv", "hrnet", "ocr_conv3x3", "ocr_distri_head"}
  w, blocks, modules = _SPEC_ARGS[width]
  assert _size(params["hrnet"]) == _trunk_count(w, blocks, modules)
  assert _size([params["ocr_conv3x3"], params["ocr_distri_head"]]) == _ocr_count(w)
  assert _size(params["mask_conv"]) == 9 * 64 + 64 + 1
  assert _size(stats) == _trunk_count(w, blocks, modules, True) + _ocr_count(w, True)


def test_reference_state_dict_names():
  """Spot checks of the names a converter maps one to one onto the reference state dict."""
  p = _shapes("w18s")["params"]
  get = lambda path: functools.reduce(lambda tree, key: tree[key], path.split("/"), p)
  assert get("mask_conv/0/kernel").shape == (3, 3, 1, 64)      # mask_conv.0.weight
  assert get("mask_conv/1/scale").shape == (1,)                # mask_conv.1.scale
  assert get("hrnet/conv1/kernel").shape == (3, 3, 3, 64)
  assert get("hrnet/layer1/0/downsample/0/kernel").shape == (1, 1, 64, 256)
  assert get("hrnet/transition1/0/0/kernel").shape == (3, 3, 256, 18)
  assert get("hrnet/transition1/1/0/0/kernel").shape == (3, 3, 256, 36)
  assert get("hrnet/transition3/3/0/0/kernel").shape == (3, 3, 72, 144)
  assert get("hrnet/stage4/1/branches/3/1/conv2/kernel").shape == (3, 3, 144, 144)
  assert get("hrnet/stage4/1/fuse_layers/0/3/0/kernel").shape == (1, 1, 144, 18)
  assert get("hrnet/stage4/1/fuse_layers/3/0/1/0/kernel").shape == (3, 3, 18, 18)
  assert get("hrnet/stage4/1/fuse_layers/3/0/2/0/kernel").shape == (3, 3, 18, 144)
  assert "stage4" in p["hrnet"] and "2" not in p["hrnet"]["stage4"]   # W18s: 2 modules
  assert set(p["ocr_conv3x3"]["0"]) == {"kernel", "bias"}       # conv3x3_ocr.0 has a bias
  head = p["ocr_distri_head"]
  assert head["object_context_block"]["f_pixel"]["3"]["0"]["scale"].shape == (64,)
  assert head["conv_bn_dropout"]["0"]["kernel"].shape == (1, 1, 256, 128)


def test_param_labels_split_trunk_and_head():
  """param_labels marks exactly the 'hrnet' leaves 'trunk' (0.1x lr); OCR and mask fusion are
  'head' (1x), as the reference's LRMult does."""
  params = _shapes("w18s")["params"]
  labels = hrnet.param_labels(params)
  flat = jax.tree_util.tree_flatten_with_path(labels)[0]
  for path, label in flat:
    assert label == ("trunk" if path[0].key == "hrnet" else "head"), path
  trunk = [x for x, l in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(labels))
           if l == "trunk"]
  assert _size(trunk) == _trunk_count(18, 2, (1, 3, 2))


def test_bad_width_and_shapes_raise_one_line_errors():
  """An unknown width or a mask of another size fails at trace time with a message that names
  the problem and the accepted values."""
  with pytest.raises(ValueError, match=r"width='w48'.*'w18s', 'w18', 'w32'"):
    _shapes("w48")
  model = hrnet.HRNetOCR("w18s")
  with pytest.raises(ValueError, match="same size"):
    jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3)),
                                      jnp.zeros((1, 32, 16, 1)), False))


def test_bf16_compute_with_float32_params():
  """dtype=bfloat16 computes in bf16 (bf16 output) from the float32 parameters and statistics
  of the default param_dtype (shape-evaluated)."""
  model = hrnet.HRNetOCR("w18s", dtype=jnp.bfloat16)
  variables = _shapes("w18s")
  assert {x.dtype for x in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 64, 64, 3)),
                                             jnp.zeros((1, 64, 64, 1)), False), variables)
  assert out.dtype == jnp.bfloat16 and out.shape == (1, 16, 16, 128)


# Initialisation (small modules, real initialisers).


def test_mask_fusion_init_scale_and_output():
  """MaskFusion starts at scale 0.1 with zero bias and N(0, 2 / fan_avg) kernels (XavierGluon,
  magnitude 2), so it first outputs 0.1 * conv3x3_stride2_pad1(mask) (NumPy; 9x7 -> 5x4)."""
  fusion = hrnet.MaskFusion()
  mask = (np.random.default_rng(0).uniform(size=(2, 9, 7, 1)) > 0.5).astype(np.float32)
  variables = fusion.init(jax.random.key(1), jnp.asarray(mask))
  p = variables["params"]
  np.testing.assert_array_equal(np.asarray(p["1"]["scale"]), [np.float32(0.1)])
  np.testing.assert_array_equal(np.asarray(p["0"]["bias"]), np.zeros(64))
  std = np.std(np.asarray(p["0"]["kernel"]))
  assert std == pytest.approx(np.sqrt(2.0 / ((9 * 1 + 9 * 64) / 2)), rel=0.15)
  out = np.asarray(fusion.apply(variables, jnp.asarray(mask)))
  assert out.shape == (2, 5, 4, 64)
  expected = 0.1 * _conv_np(mask, np.asarray(p["0"]["kernel"]), 2)
  np.testing.assert_allclose(out, expected, atol=1e-5)


# NumPy references.


def _conv_np(x, k, stride, bias=None):
  """PyTorch Conv2d(padding=k // 2) in float64: x [B, H, W, C], k [kh, kw, C, O]."""
  x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
  pad = k.shape[0] // 2
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  oh = (x.shape[1] + 2 * pad - k.shape[0]) // stride + 1
  ow = (x.shape[2] + 2 * pad - k.shape[1]) // stride + 1
  out = np.zeros(x.shape[:1] + (oh, ow, k.shape[3]))
  for i in range(k.shape[0]):
    for j in range(k.shape[1]):
      out += xp[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride] @ k[i, j]
  return out if bias is None else out + np.asarray(bias)


def _bn_np(x, params, stats):
  """Eval-mode BatchNorm with PyTorch's eps."""
  return ((x - np.asarray(stats["mean"])) / np.sqrt(np.asarray(stats["var"]) + 1e-5)
          * np.asarray(params["scale"]) + np.asarray(params["bias"]))


def _conv_bn_np(x, params, stats, stride=1, relu=False):
  """ConvBN ('0' conv, '1' BN)."""
  y = _bn_np(_conv_np(x, params["0"]["kernel"], stride, params["0"].get("bias")),
             params["1"], stats["1"])
  return np.maximum(y, 0) if relu else y


def _resize_ac_np(x, h, w):
  """Bilinear, align_corners=True, along rows then columns ([B, H, W, C])."""
  for axis, n in ((1, h), (2, w)):
    size = x.shape[axis]
    pos = np.arange(n) * ((size - 1) / (n - 1)) if n > 1 else np.zeros(n)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, size - 1)
    f = (pos - lo).reshape((-1,) + (1,) * (3 - axis))
    x = np.take(x, lo, axis) * (1 - f) + np.take(x, hi, axis) * f
  return x


def _softmax_np(x, axis):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def _projection_np(x, params, stats):
  """OCR Projection: (1x1 conv, BN, ReLU) pairs named ('0', '1/0'), ('2', '3/0')."""
  for k in range(len(params) // 2):
    x = x @ np.asarray(params[str(2 * k)]["kernel"], np.float64)[0, 0]
    x = np.maximum(_bn_np(x, params[str(2 * k + 1)]["0"], stats[str(2 * k + 1)]["0"]), 0)
  return x


# Shared W18s forward passes at 60x44.


def _fill(shapes, seed=0):
  """Parameters and statistics that keep activations O(1) through the trunk (in eval mode BN
  does not renormalise): kernels N(0, 0.5 / fan_in), BN scale U(0.8, 1.2), biases and means
  N(0, 0.1), variances U(0.5, 1.5), mask scale 0.5."""
  r = np.random.default_rng(seed)

  def leaf(path, s):
    keys = [getattr(k, "key", None) for k in path]
    name = keys[-1]
    if name == "kernel":
      value = r.normal(size=s.shape) * np.sqrt(0.5 / np.prod(s.shape[:-1]))
    elif name == "scale" and keys[1] == "mask_conv":
      value = np.full(s.shape, 0.5)
    elif name == "scale":
      value = r.uniform(0.8, 1.2, s.shape)
    elif name == "var":
      value = r.uniform(0.5, 1.5, s.shape)
    else:
      value = 0.1 * r.normal(size=s.shape)
    return jnp.asarray(value, s.dtype)

  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _inputs(seed, height=H, width=W):
  """A normal-noise image batch [B, height, width, 3] and two rectangle masks."""
  r = np.random.default_rng(seed)
  image = r.normal(size=(B, height, width, 3)).astype(np.float32)
  mask = np.zeros((B, height, width, 1), np.float32)
  mask[0, height // 6:2 * height // 3, width // 8:2 * width // 3] = 1.0
  mask[1, height // 2:, width // 2:] = 1.0
  return jnp.asarray(image), jnp.asarray(mask)


def _inter(tree, path):
  for key in path.split("/"):
    tree = tree[key]
  return tree["__call__"][0]


@pytest.fixture(scope="module")
def eval_pass():
  """Eval-mode W18s at [2, 60, 44] with every module's output captured (Python loops: a scan
  does not capture its body's intermediates); also returns the jitted function for more
  inputs of that shape."""
  model = hrnet.HRNetOCR("w18s", scan=False)
  variables = _fill(_shapes("w18s", hw=(H, W)))
  run = jax.jit(lambda image, mask: model.apply(
      variables, image, mask, False, capture_intermediates=True, mutable=["intermediates"]))
  image, mask = _inputs(0)
  out, state = run(image, mask)
  return variables, image, mask, np.asarray(out, np.float64), state["intermediates"], run


@pytest.fixture(scope="module")
def train_pass():
  """Train-mode W18s at [2, 256, 256] (the paper's size), capturing hrnet/conv1's output."""
  model = hrnet.HRNetOCR("w18s")
  variables = _fill(_shapes("w18s", hw=(256, 256)))
  capture = lambda module, _: module.path == ("hrnet", "conv1")
  run = jax.jit(lambda image, mask, key: model.apply(
      variables, image, mask, True, capture_intermediates=capture,
      mutable=["batch_stats", "intermediates"], rngs={"dropout": key}))
  return variables, run


def test_output_shape_odd_size_and_scale(eval_pass):
  """60x44 (not multiples of 32) gives [B, 15, 11, 128]; the OCR output is O(1) and not
  degenerate, so the comparisons below are meaningful."""
  _, _, _, out, inter, _ = eval_pass
  assert out.shape == (B, OH, OW, 128)
  assert _inter(inter, "hrnet").shape == (B, OH, OW, 270)   # 18 + 36 + 72 + 144 channels
  assert 0.05 < out.std() < 10 and np.isfinite(out).all()


def test_stem_adds_mask_features_after_relu_bn1(eval_pass):
  """conv2 sees relu(bn1(conv1(image))) + |scale| * (conv_mask(mask) + bias): conv2's output
  equals the NumPy convolution of exactly that sum, and mask_conv's output equals
  0.5 * (conv3x3 s2 of the mask + bias)."""
  variables, _, mask, _, inter, _ = eval_pass
  p = variables["params"]
  mask_features = _inter(inter, "mask_conv")
  expected_mask = 0.5 * _conv_np(mask, p["mask_conv"]["0"]["kernel"], 2,
                                 p["mask_conv"]["0"]["bias"])
  np.testing.assert_allclose(np.asarray(mask_features), expected_mask, atol=1e-5)
  stem = np.maximum(np.asarray(_inter(inter, "hrnet/bn1"), np.float64), 0) + expected_mask
  expected = _conv_np(stem, p["hrnet"]["conv2"]["kernel"], 2)
  np.testing.assert_allclose(np.asarray(_inter(inter, "hrnet/conv2")), expected, atol=1e-4)
  assert np.abs(expected_mask).max() > 0.05   # the mask does change conv2's input


def test_transition_and_fusions_match_numpy(eval_pass):
  """transition1's new branch = relu(bn(conv3x3 s2(layer1))); stage 2 fusion row 0 =
  relu(x0 + up_ac(bn(conv1x1(x1)))), row 1 = relu(bn(conv3x3 s2(x0)) + x1); stage 3 row 2 =
  relu(chain(x0) + bn(conv s2(x1)) + x2) with a ReLU inside the two-step chain but not after."""
  variables, _, _, _, inter, _ = eval_pass
  p, s = variables["params"]["hrnet"], variables["batch_stats"]["hrnet"]
  f64 = lambda x: np.asarray(x, np.float64)
  close = lambda actual, expected: np.testing.assert_allclose(actual, expected, atol=1e-4,
                                                              rtol=1e-4)
  layer1 = f64(_inter(inter, "hrnet/layer1"))
  t1 = _inter(inter, "hrnet/transition1")
  close(f64(t1[1]), _conv_bn_np(layer1, p["transition1"]["1"]["0"], s["transition1"]["1"]["0"],
                                2, True))
  x0, x1 = (f64(x) for x in _inter(inter, "hrnet/stage2/0/branches"))
  fp, fs = p["stage2"]["0"]["fuse_layers"], s["stage2"]["0"]["fuse_layers"]
  up = _resize_ac_np(_conv_bn_np(x1, fp["0"]["1"], fs["0"]["1"]), *x0.shape[1:3])
  rows = [f64(x) for x in _inter(inter, "hrnet/stage2/0/fuse_layers")]
  close(rows[0], np.maximum(x0 + up, 0))
  close(rows[1], np.maximum(_conv_bn_np(x0, fp["1"]["0"]["0"], fs["1"]["0"]["0"], 2) + x1, 0))
  c0, c1, c2 = (f64(x) for x in _inter(inter, "hrnet/stage3/0/branches"))
  fp, fs = p["stage3"]["0"]["fuse_layers"]["2"], s["stage3"]["0"]["fuse_layers"]["2"]
  chain = _conv_bn_np(c0, fp["0"]["0"], fs["0"]["0"], 2, relu=True)
  chain = _conv_bn_np(chain, fp["0"]["1"], fs["0"]["1"], 2)
  expected = np.maximum(chain + _conv_bn_np(c1, fp["1"]["0"], fs["1"]["0"], 2) + c2, 0)
  close(f64(_inter(inter, "hrnet/stage3/0/fuse_layers")[2]), expected)


def test_final_concat_and_ocr_head_match_numpy(eval_pass):
  """The 270-channel output is cat(x0, up_ac(x1), up_ac(x2), up_ac(x3)) of stage 4, and the
  whole OCR head (eval mode) equals a float64 NumPy evaluation: 3x3 conv + BN + ReLU, soft
  regions softmax_HW(resize_ac(cat(mask, 1 - mask))), region vectors, attention with
  softmax(q k^T / 8), f_up, then [context, features] -> 1x1 conv + BN + ReLU."""
  variables, _, mask, out, inter, _ = eval_pass
  p, s = variables["params"], variables["batch_stats"]
  xs = [np.asarray(x, np.float64) for x in _inter(inter, "hrnet/stage4")]
  concat = np.concatenate([xs[0]] + [_resize_ac_np(x, OH, OW) for x in xs[1:]], -1)
  feats = np.asarray(_inter(inter, "hrnet"), np.float64)
  np.testing.assert_allclose(feats, concat, atol=1e-5, rtol=1e-5)

  o = _conv_bn_np(feats, p["ocr_conv3x3"], s["ocr_conv3x3"], relu=True)
  m = np.asarray(mask, np.float64)
  regions = _resize_ac_np(np.concatenate([m, 1 - m], -1), OH, OW).reshape(B, OH * OW, 2)
  proxy = np.einsum("bnk,bnc->bkc", _softmax_np(regions, 1), o.reshape(B, OH * OW, -1))
  hp, hs = p["ocr_distri_head"], s["ocr_distri_head"]
  ap, as_ = hp["object_context_block"], hs["object_context_block"]
  query = _projection_np(o.reshape(B, OH * OW, -1), ap["f_pixel"], as_["f_pixel"])
  key = _projection_np(proxy, ap["f_object"], as_["f_object"])
  value = _projection_np(proxy, ap["f_down"], as_["f_down"])
  attention = _softmax_np(np.einsum("bnd,bkd->bnk", query, key) / 8.0, -1)
  context = _projection_np(attention @ value, ap["f_up"], as_["f_up"])
  expected = _projection_np(np.concatenate([context, o.reshape(B, OH * OW, -1)], -1),
                            hp["conv_bn_dropout"], hs["conv_bn_dropout"])
  np.testing.assert_allclose(out.reshape(B, OH * OW, -1), expected, atol=1e-4, rtol=1e-4)


def test_eval_mode_examples_are_independent(eval_pass):
  """With train=False (running statistics) example 0's output does not depend on example 1."""
  _, image, mask, out, _, run = eval_pass
  other = image.at[1].set(image[1] * 3.0 + 1.0)
  np.testing.assert_allclose(np.asarray(run(other, mask)[0][0]), out[0], atol=1e-5)


def test_scanned_stages_equal_the_python_loops(eval_pass):
  """scan=True (each stage's modules and each branch's blocks one `lax.scan`; the default)
  keeps the loops' variable layout and computes what they compute: the same eval output, and
  in train mode the same output and BatchNorm statistics, each block's written back to its
  own place (gradients: `test_training_and_evaluation_scan_the_stages_by_default`).

  Tolerances: eval mode agrees to 1e-5. Train mode normalises with batch statistics computed
  in float32 as E[x^2] - E[x]^2, which amplifies rounding: scaling the input by (1 + 1e-7)
  moves this output by ~5e-4 (max 5), and the loops alone, jitted or not, differ by as much.
  So train mode is compared to 2e-3 of each array's scale; a block applied out of order or a
  statistic written to the wrong block differs by O(1)."""
  variables, image, mask, loop_out, _, _ = eval_pass
  loop, scan = hrnet.HRNetOCR("w18s", scan=False), hrnet.HRNetOCR("w18s", scan=True)
  init = lambda m: jax.eval_shape(lambda: m.init({"params": jax.random.key(0)}, image, mask, False))
  assert jax.tree.map(jnp.shape, init(loop)) == jax.tree.map(jnp.shape, init(scan))
  scan_out = jit_unoptimized(lambda v: scan.apply(v, image, mask, False))(variables)
  np.testing.assert_allclose(np.asarray(scan_out, np.float64), loop_out, atol=1e-5, rtol=1e-5)

  train = lambda m: jit_unoptimized(lambda v: m.apply(
      v, image, mask, True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)}))(variables)
  (loop_train, loop_state), (scan_train, scan_state) = train(loop), train(scan)
  expected = [loop_train] + jax.tree.leaves(loop_state["batch_stats"])
  actual = [scan_train] + jax.tree.leaves(scan_state["batch_stats"])
  assert jax.tree.structure(loop_state) == jax.tree.structure(scan_state)
  for e, a in zip(expected, actual):
    scale = float(np.abs(np.asarray(e)).max())
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=2e-3 * scale, rtol=0)
  # The statistics moved (so the comparison above sees the updates, not the old values).
  old_stats = jax.tree.leaves(variables["batch_stats"])
  moved = [np.abs(np.asarray(n) - np.asarray(o)).max()
           for n, o in zip(jax.tree.leaves(scan_state["batch_stats"]), old_stats)]
  assert min(moved) > 1e-3


def test_training_and_evaluation_scan_the_stages_by_default():
  """The default (`scan=True`) scans the stages in training and in evaluation, for 2-block
  (W18-small) and 4-block (W18, W32) branches alike. Scanned training computes the loops'
  parameter gradients and BatchNorm statistics, here on a narrow variant (width 4, 2 blocks,
  modules (1, 2, 1): a stage scanned over modules, its branches over blocks) at 64 px.
  Tolerance: as `test_scanned_stages_equal_the_python_loops`'s train mode, 2e-3 of each
  array's scale; a gradient taken through the wrong block is off by O(1)."""
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 64, 64, 3)), jnp.float32)
  def scans(spec, train):
    init = lambda: hrnet.HRNetV2(spec).init(jax.random.key(0), x, None, train)
    return "scan[" in str(jax.make_jaxpr(init)())
  assert hrnet.SPECS["w18"].blocks == hrnet.SPECS["w32"].blocks == 4
  assert hrnet.SPECS["w18s"].blocks == 2
  assert scans(hrnet.HRNetSpec(4, 4, (1, 1, 1)), True)
  assert scans(hrnet.HRNetSpec(4, 2, (1, 1, 1)), True)
  assert scans(hrnet.HRNetSpec(4, 2, (1, 1, 1)), False)

  spec = hrnet.HRNetSpec(4, 2, (1, 2, 1))
  variables = _fill(jax.eval_shape(
      lambda: hrnet.HRNetV2(spec, scan=False).init(jax.random.key(1), x, None, False)))
  weights = jnp.asarray(np.random.default_rng(5).normal(size=(2, 16, 16, 60)), jnp.float32)

  def gradients(scan):
    def loss(params):
      out, state = hrnet.HRNetV2(spec, scan=scan).apply(
          {"params": params, "batch_stats": variables["batch_stats"]}, x, None, True,
          mutable=["batch_stats"])
      return jnp.sum(out * weights), state["batch_stats"]
    return jit_unoptimized(jax.grad(loss, has_aux=True))(variables["params"])

  loops, scanned = gradients(False), gradients(True)
  assert jax.tree.structure(loops) == jax.tree.structure(scanned)
  for e, a in zip(jax.tree.leaves(loops), jax.tree.leaves(scanned)):
    scale = float(np.abs(np.asarray(e)).max())
    assert scale > 0
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=2e-3 * scale, rtol=0)


def test_train_mode_jits_at_256px_with_batch_statistics(train_pass):
  """At 256x256 (jitted, train=True) the output is [2, 64, 64, 128] and finite; example 0's
  output depends on example 1 (batch statistics), and hrnet/bn1's running mean and variance
  become 0.9 * old + 0.1 * (batch mean, biased batch variance) of conv1's output over B, H, W
  (flax momentum 0.9 = PyTorch momentum 0.1)."""
  variables, run = train_pass
  image, mask = _inputs(0, 256, 256)
  key = jax.random.key(7)
  out, state = run(image, mask, key)
  assert out.shape == (B, 64, 64, 128) and bool(jnp.isfinite(out).all())
  out_other, _ = run(image.at[1].set(image[1] * 3.0 + 1.0), mask, key)
  assert np.abs(np.asarray(out[0]) - np.asarray(out_other[0])).max() > 1e-2

  conv1 = np.asarray(_inter(state["intermediates"], "hrnet/conv1"), np.float64)
  old = variables["batch_stats"]["hrnet"]["bn1"]
  new = state["batch_stats"]["hrnet"]["bn1"]
  np.testing.assert_allclose(np.asarray(new["mean"]), 0.9 * np.asarray(old["mean"])
                             + 0.1 * conv1.mean(axis=(0, 1, 2)), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(new["var"]), 0.9 * np.asarray(old["var"])
                             + 0.1 * conv1.var(axis=(0, 1, 2)), atol=1e-5, rtol=1e-4)


def test_train_mode_dropout2d_drops_whole_channels(train_pass):
  """Two dropout keys give outputs that differ only by whole channels of an example being
  zeroed (Dropout2d, p = 0.05, survivors scaled alike): per (example, channel) the two maps are
  equal or one of them is all zero, and some channel differs."""
  _, run = train_pass
  image, mask = _inputs(0, 256, 256)
  out1 = np.asarray(run(image, mask, jax.random.key(1))[0])
  out2 = np.asarray(run(image, mask, jax.random.key(2))[0])
  same = np.all(np.isclose(out1, out2, atol=1e-5), axis=(1, 2))
  zero1, zero2 = np.all(out1 == 0, axis=(1, 2)), np.all(out2 == 0, axis=(1, 2))
  assert np.all(same | zero1 | zero2)
  assert not np.all(same)
