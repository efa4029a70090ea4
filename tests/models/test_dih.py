"""DIH / iDIH / iDIH-HRNet: parameter counts derived by hand from the reference layer specs,
feature-map sizes, transposed-conv semantics against a NumPy PyTorch-style reference, the
blending head (eq. 1), iDIH-HRNet's feature pyramid (sizes at the joined encoder positions,
numerics against NumPy)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import numpy_params
from cpjax.models import dih


def _conv(cin: int, cout: int, k: int = 4) -> int:
  return k * k * cin * cout + cout


def _bn(c: int) -> int:
  return 2 * c   # scale + bias (running statistics are not parameters)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _init_shapes(module, *args):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), *args))


def _zeros(b, h, w, c):
  return jnp.zeros((b, h, w, c), jnp.float32)


# Hand derivation of improved_dih256 (saic-vul's layer specs): encoder 4 -> 64 -> 64 (no
# BatchNorm in blocks 0, 1) -> 128 -> 128 -> 256 -> 256 -> 512; decoder 512 -> 256, 256, 128,
# 128, 64, 64, 32 (all with BatchNorm); 1x1 heads 32 -> 3 and 32 -> 1.
IDIH256 = (_conv(4, 64) + _conv(64, 64)
           + sum(_conv(a, b) + _bn(b) for a, b in [(64, 128), (128, 128), (128, 256),
                                                   (256, 256), (256, 512)])
           + sum(_conv(a, b) + _bn(b) for a, b in [(512, 256), (256, 256), (256, 128),
                                                   (128, 128), (128, 64), (64, 64), (64, 32)])
           + _conv(32, 3, k=1) + _conv(32, 1, k=1))


def test_idih256_parameter_count_and_feature_sizes():
  """improved_dih256 has 8,301,284 parameters (hand count) and encoder maps 128 ... 4, 1."""
  assert IDIH256 == 8_301_284
  variables = _init_shapes(dih.IDIH(), _zeros(1, 256, 256, 3), _zeros(1, 256, 256, 1))
  assert _count(variables["params"]) == IDIH256
  assert "bn" not in variables["params"]["encoder"]["block1"]
  assert "bn" in variables["params"]["encoder"]["block2"]
  outputs = jax.eval_shape(lambda x: dih.ConvEncoder(7, batchnorm_from=2).init_with_output(
      jax.random.key(0), x)[0], _zeros(1, 256, 256, 4))
  assert [o.shape[1] for o in outputs] == [128, 64, 32, 16, 8, 4, 1]
  assert [o.shape[-1] for o in outputs] == [64, 64, 128, 128, 256, 256, 512]


def test_idih512_and_dih256_variants():
  """Depth 8 adds a 512 -> 512 encoder block and a 512 -> 512 decoder block; dih256 adds
  BatchNorm to blocks 0, 1 and drops the attention head."""
  v512 = _init_shapes(dih.IDIH(depth=8), _zeros(1, 512, 512, 3), _zeros(1, 512, 512, 1))
  extra = _conv(512, 512) + _bn(512)
  assert _count(v512["params"]) == IDIH256 + 2 * extra
  v_dih = _init_shapes(dih.IDIH(batchnorm_from=0, image_fusion=False), _zeros(1, 256, 256, 3),
                       _zeros(1, 256, 256, 1))
  assert _count(v_dih["params"]) == IDIH256 + _bn(64) * 2 - _conv(32, 1, k=1)


def test_backbone_join_concatenates_128_channels_after_block1():
  """iDIH-HRNet's encoder block 2 takes 64 + 128 channels: 16 * 128 * 128 more weights."""
  variables = _init_shapes(dih.IDIH(backbone_join_at=1), _zeros(1, 256, 256, 3),
                           _zeros(1, 256, 256, 1), [_zeros(1, 64, 64, 128)])
  assert variables["params"]["encoder"]["block2"]["conv"]["kernel"].shape == (4, 4, 192, 128)
  assert _count(variables["params"]) == IDIH256 + 16 * 128 * 128
  with pytest.raises(ValueError, match="backbone_features"):
    dih.IDIH(backbone_join_at=1).init(jax.random.key(0), _zeros(1, 32, 32, 3),
                                      _zeros(1, 32, 32, 1))


@pytest.mark.parametrize("maps,match", [
    ([_zeros(1, 8, 8, 2)] * 3, "give 1 to 2 maps"),      # joins after blocks 1, 2 only (depth 4)
    ([_zeros(1, 8, 8, 2), _zeros(1, 8, 8, 2)], r"backbone_features\[1\] is \(1, 8, 8, 2\)")])
def test_backbone_maps_must_fit_the_encoder(maps, match):
  """More maps than blocks with a next block, or a map of the wrong size: a one-line error."""
  x = _zeros(1, 32, 32, 3)
  with pytest.raises(ValueError, match=match):
    _init_shapes(dih.IDIH(depth=4, ch=4, max_channels=8, backbone_join_at=1), x,
                 _zeros(1, 32, 32, 1), maps)


def test_dih_parameter_counts():
  """deploy_skip_all_512 (conv0-6 + BN/scale, fc7 8192 -> 1024, deconv6-0, 'output' deconv to
  RGB) and deploy_512, the released joint net: the parsing decoder's levels, its head
  (deconv 64 -> 64 + BN/scale, 1x1 conv 64 -> 26), and its level outputs concatenated into the
  inputs of harmonisation deconv5 ... deconv0 (not into 'output-h', which reads 64 channels)."""
  enc = sum(_conv(a, b) + _bn(b) for a, b in [(4, 64), (64, 64), (64, 128), (128, 128),
                                              (128, 256), (256, 256), (256, 512)])
  fc7 = 4 * 4 * 512 * 1024 + 1024
  levels = [(1024, 512), (512, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64)]
  dec = sum(_conv(a, b) + _bn(b) for a, b in levels)
  deploy = enc + fc7 + dec + _conv(64, 3)
  assert deploy == 25_051_395
  x, m = _zeros(1, 512, 512, 3), _zeros(1, 512, 512, 1)
  assert _count(_init_shapes(dih.DIH(parsing_classes=0), x, m)["params"]) == deploy
  concat_extra = sum(16 * a * b for a, b in levels[1:])
  parsing = dec + _conv(64, 64) + _bn(64) + _conv(64, 26, k=1)
  joint = deploy + parsing + concat_extra
  assert joint == 41_769_181
  variables = _init_shapes(dih.DIH(), x, m)
  assert _count(variables["params"]) == joint
  h, seg = variables["params"]["harmonization_decoder"], variables["params"]["parsing_decoder"]
  assert h["deconv0"]["deconv"]["kernel"].shape == (4, 4, 128, 64)   # concat-res1
  assert h["output"]["kernel"].shape == (4, 4, 64, 3)                # skip0-h alone
  assert seg["head"]["deconv"]["kernel"].shape == (4, 4, 64, 64)
  assert seg["classifier"]["kernel"].shape == (1, 1, 64, 26)
  pred, logits = jax.eval_shape(lambda: dih.DIH().init_with_output(jax.random.key(0), x, m)[0])
  assert pred.shape == (1, 512, 512, 3) and logits.shape == (1, 512, 512, 26)


def test_caffe_input_space_is_the_demos():
  """caffe_inputs: BGR on 0..255 minus (104.00699, 116.66877, 122.67892) (to 1e-5) and
  mask * 255 - 128; caffe_to_rgb undoes the image part."""
  image = np.random.default_rng(0).random((2, 3, 3)).astype(np.float32)
  mask = np.array([[0.0, 0.5, 1.0]] * 2, np.float32)[..., None]
  x, m = dih.caffe_inputs(jnp.asarray(image), jnp.asarray(mask))
  demo = image[..., ::-1] * 255.0 - np.array([104.00699, 116.66877, 122.67892])
  np.testing.assert_allclose(x, demo, atol=1e-4)
  np.testing.assert_allclose(m[..., 0], [[-128.0, -0.5, 127.0]] * 2)
  np.testing.assert_allclose(dih.caffe_to_rgb(x), image, atol=1e-6)


def _torch_conv_transpose(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
  """PyTorch ConvTranspose2d semantics in NumPy: x [H, W, Cin], w [Cin, Cout, k, k];
  out[i * s - p + a, j * s - p + b] += x[i, j] @ w[:, :, a, b]."""
  h, wd, _ = x.shape
  k = w.shape[-1]
  full = np.zeros(((h - 1) * stride + k, (wd - 1) * stride + k, w.shape[1]))
  for i in range(h):
    for j in range(wd):
      full[i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum(
          "c,cdab->abd", x[i, j], w)
  return full[padding:full.shape[0] - padding, padding:full.shape[1] - padding]


@pytest.mark.parametrize("padding", [1, 0])
def test_deconv_block_is_pytorch_conv_transpose_with_flipped_kernel(padding):
  """DeconvBlock's transposed conv (no BatchNorm) equals PyTorch's ConvTranspose2d(k4, s2, p)
  whose weight is the flax kernel flipped spatially with in/out swapped: the rule a checkpoint
  converter applies."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 3, 2)).astype(np.float32)
  block = dih.DeconvBlock(5, padding=padding, norm=False)
  params = numpy_params(jax.eval_shape(block.init, jax.random.key(0), x))
  got = np.asarray(block.apply(params, x))[0]
  kernel = np.asarray(params["params"]["deconv"]["kernel"])            # [k, k, in, out]
  torch_w = kernel[::-1, ::-1].transpose(2, 3, 0, 1)                    # [in, out, k, k]
  pre = _torch_conv_transpose(x[0], torch_w, 2, padding) + np.asarray(
      params["params"]["deconv"]["bias"])
  expected = np.where(pre > 0, pre, np.expm1(pre))                      # ELU
  assert got.shape == (6 if padding else 8, 6 if padding else 8, 5)
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_blending_head_is_equation_1():
  """out = a * image + (1 - a) * to_rgb(x), a = sigmoid(3 * conv_attention(x)), with x the last
  decoder block's output (captured), checked in NumPy."""
  model = dih.IDIH(depth=3, ch=4, max_channels=8)
  rng = np.random.default_rng(1)
  image = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  mask = (rng.random((2, 16, 16, 1)) > 0.5).astype(np.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), image, mask)
  variables = {"params": numpy_params(variables["params"]),
               "batch_stats": jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype),
                                            variables["batch_stats"])}
  out, state = model.apply(variables, image, mask, capture_intermediates=True,
                           mutable=["intermediates"])
  x = np.asarray(state["intermediates"]["decoder"]["block2"]["__call__"][0])
  p = variables["params"]["decoder"]
  rgb = x @ np.asarray(p["to_rgb"]["kernel"])[0, 0] + np.asarray(p["to_rgb"]["bias"])
  z = x @ np.asarray(p["conv_attention"]["kernel"])[0, 0] + np.asarray(p["conv_attention"]["bias"])
  a = 1.0 / (1.0 + np.exp(-3.0 * z))
  np.testing.assert_allclose(np.asarray(out), a * image + (1 - a) * rgb, atol=1e-5)


def test_idih_hrnet_composition():
  """iDIH-HRNet = the foreground-aware HRNetOCR ('backbone', counted on its own) + the iDIH whose
  block 2 takes its 128 OCR channels ('model'), and nothing else without the pyramid option; the
  output is the image size."""
  from cpjax.models.hrnet import HRNetOCR  # pylint: disable=g-import-not-at-top
  x, m = _zeros(1, 64, 64, 3), _zeros(1, 64, 64, 1)
  out, variables = jax.eval_shape(lambda: dih.IDIHHRNet("w18s", depth=5).init_with_output(
      jax.random.key(0), x, m))
  backbone = _init_shapes(HRNetOCR("w18s"), x, m, False)
  idih = _init_shapes(dih.IDIH(depth=5, backbone_join_at=1), x, m, [_zeros(1, 16, 16, 128)])
  assert set(variables["params"]) == {"backbone", "model"}
  assert _count(variables["params"]["backbone"]) == _count(backbone["params"])
  assert _count(variables["params"]["model"]) == _count(idih["params"])
  assert out.shape == (1, 64, 64, 3)


# Hand derivation of iDIH-HRNet at 256 px, from the reference (saic-vul/image_harmonization:
# iharm/model/backboned/hrnet.py HRNetIHModel / HRNetBB, iharm/model/modeling/basic_blocks.py
# ConvBlock / MaxPoolDownSize, iharm/model/modeling/conv_autoencoder.py ConvEncoder, and
# iharm/mconfigs/backboned.py hrnet18s_v2p_idih256 / hrnet18_v2p_idih256: pyramid_channels=256).
# - The backbone, HRNetOCR = trunk + OCR head + mask fusion, per scope in tests/models/
#   test_hrnet.py: W18s 3,860,720 + 386,304 + 641; W18 9,562,260 + 386,304 + 641.
# - One map (pyramid off): the 128 OCR channels widen encoder block 2 (k4, 64 + 128 -> 128).
# - Pyramid ('downsize', MaxPoolDownSize(128, 256, 256, pyramid_depth)): reduce_conv = 1x1 conv
#   with bias 128 -> 256 + BN; convs 0-3 = 3x3 conv with bias 256 -> 256 + BN
#   = (32,768 + 256 + 512) + 4 * (589,824 + 256 + 512) = 33,536 + 4 * 590,592 = 2,395,904;
#   pyramid_depth = min(depth - 2, 4) = 4 maps of 256 channels, concatenated ('cat' connectors,
#   no parameters) before encoder blocks 2-5 (outputs 128, 128, 256, 256):
#   16 * 256 * (128 + 128 + 256 + 256) = 3,145,728 more encoder weights.
HRNET_OCR = {"w18s": 3_860_720 + 386_304 + 641, "w18": 9_562_260 + 386_304 + 641}
ONE_MAP_JOIN = 16 * 128 * 128
PYRAMID = _conv(128, 256, k=1) + _bn(256) + 4 * (_conv(256, 256, k=3) + _bn(256))
PYRAMID_JOINS = 16 * 256 * (128 + 128 + 256 + 256)


@pytest.mark.parametrize("width,pyramid_channels,total", [
    ("w18s", 0, 12_811_093), ("w18s", 256, 18_090_581), ("w18", 256, 23_792_121)])
def test_idih_hrnet_parameter_counts(width, pyramid_channels, total):
  """hrnet18s_idih256 (one map), hrnet18s_v2p_idih256 and hrnet18_v2p_idih256 (pyramid) have
  the hand-derived counts per scope: 'backbone', 'downsize' (pyramid only), 'model'."""
  assert PYRAMID == 2_395_904 and PYRAMID_JOINS == 3_145_728
  expected = ({"backbone": HRNET_OCR[width], "downsize": PYRAMID, "model": IDIH256 + PYRAMID_JOINS}
              if pyramid_channels else
              {"backbone": HRNET_OCR[width], "model": IDIH256 + ONE_MAP_JOIN})
  assert sum(expected.values()) == total
  variables = _init_shapes(dih.IDIHHRNet(width, pyramid_channels=pyramid_channels),
                           _zeros(1, 256, 256, 3), _zeros(1, 256, 256, 1))
  assert {k: _count(v) for k, v in variables["params"].items()} == expected


@pytest.mark.parametrize("size,depth,downsize,levels", [
    (256, 7, False, 4), (512, 8, True, 4), (64, 5, False, 3)])
def test_pyramid_maps_have_the_size_of_the_encoder_outputs_they_join(size, depth, downsize,
                                                                     levels):
  """Pyramid level k has 256 channels and the H, W of encoder block join + k's output (join = 1,
  2 with the half-size backbone input: 256 px 64 ... 8, 512 px 64 ... 8), min(depth - 1 - join,
  4) levels; exactly blocks join + 1 ... join + levels take 256 more input channels."""
  model = dih.IDIHHRNet("w18s", depth=depth, downsize_backbone_input=downsize,
                        pyramid_channels=256)
  x, m = _zeros(1, size, size, 3), _zeros(1, size, size, 1)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, m,
                                                capture_intermediates=True, mutable=True))
  pyramid = variables["intermediates"]["downsize"]["__call__"][0]
  encoder = variables["intermediates"]["model"]["encoder"]
  join = 2 if downsize else 1
  assert len(pyramid) == levels
  for k, level in enumerate(pyramid):
    block_output = encoder[f"block{join + k}"]["__call__"][0]
    assert level.shape == block_output.shape[:-1] + (256,)
  kernels = variables["params"]["model"]["encoder"]
  channels = dih.encoder_channels(depth)
  for i in range(1, depth):
    extra = 256 if join < i <= join + levels else 0
    assert kernels[f"block{i}"]["conv"]["kernel"].shape == (4, 4, channels[i - 1] + extra,
                                                            channels[i])


def _np_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
  """Stride-1 conv with zero padding k // 2: x [B, H, W, C], kernel [k, k, C, O]."""
  k, (h, w) = kernel.shape[0], x.shape[1:3]
  padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  return sum(padded[:, a:a + h, b:b + w] @ kernel[a, b] for a in range(k) for b in range(k)) + bias


def _np_conv_block(x: np.ndarray, params: dict, stats: dict) -> np.ndarray:
  """conv -> BatchNorm with running statistics (eps 1e-5) -> ELU."""
  y = _np_conv(x, np.asarray(params["conv"]["kernel"]), np.asarray(params["conv"]["bias"]))
  bn, st = params["bn"], stats["bn"]
  y = ((y - np.asarray(st["mean"])) / np.sqrt(np.asarray(st["var"]) + 1e-5)
       * np.asarray(bn["scale"]) + np.asarray(bn["bias"]))
  return np.where(y > 0, y, np.expm1(y))


def test_feature_pyramid_matches_numpy():
  """Level i = convs_i(maxpool2x2^i(reduce_conv(x))), pooling the REDUCED map (floor sizes:
  9 x 6 -> 4 x 3 -> 2 x 1), as the reference's MaxPoolDownSize; checked in NumPy in eval mode."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 9, 6, 4)).astype(np.float32)
  model = dih.FeaturePyramid(channels=3, levels=3)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  variables = {"params": numpy_params(shapes["params"]),
               "batch_stats": jax.tree.map(
                   lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype),
                   shapes["batch_stats"])}
  got = model.apply(variables, x)
  p, st = variables["params"], variables["batch_stats"]
  reduced = _np_conv_block(x, p["reduce_conv"], st["reduce_conv"])
  for i, level in enumerate(got):
    if i:
      b, h, w, c = reduced.shape
      reduced = reduced[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max((2, 4))
    expected = _np_conv_block(reduced, p[f"convs_{i}"], st[f"convs_{i}"])
    assert level.shape == expected.shape
    np.testing.assert_allclose(np.asarray(level), expected, atol=1e-5)
  assert [level.shape[1:3] for level in got] == [(9, 6), (4, 3), (2, 1)]
