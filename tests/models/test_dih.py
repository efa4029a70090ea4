"""DIH / iDIH / iDIH-HRNet: parameter counts derived by hand from the reference layer specs,
feature-map sizes, transposed-conv semantics against a NumPy PyTorch-style reference, the
blending head (eq. 1)."""
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


# Hand derivation of improved_dih256 (REFERENCE.md): encoder 4 -> 64 -> 64 (no BatchNorm in
# blocks 0, 1) -> 128 -> 128 -> 256 -> 256 -> 512; decoder 512 -> 256, 256, 128, 128, 64, 64, 32
# (all with BatchNorm); 1x1 heads 32 -> 3 and 32 -> 1.
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
                           _zeros(1, 256, 256, 1), _zeros(1, 64, 64, 128))
  assert variables["params"]["encoder"]["block2"]["conv"]["kernel"].shape == (4, 4, 192, 128)
  assert _count(variables["params"]) == IDIH256 + 16 * 128 * 128
  with pytest.raises(ValueError, match="backbone_features"):
    dih.IDIH(backbone_join_at=1).init(jax.random.key(0), _zeros(1, 32, 32, 3),
                                      _zeros(1, 32, 32, 1))


def test_dih_parameter_counts():
  """Caffe deploy net (conv0-6 + BN/scale, fc7 8192 -> 1024, deconv6-0, 'output' deconv to RGB)
  and the joint net (parsing decoder to 26 classes; its features concatenated into every
  harmonisation layer after the first)."""
  enc = sum(_conv(a, b) + _bn(b) for a, b in [(4, 64), (64, 64), (64, 128), (128, 128),
                                              (128, 256), (256, 256), (256, 512)])
  fc7 = 4 * 4 * 512 * 1024 + 1024
  levels = [(1024, 512), (512, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64)]
  dec = sum(_conv(a, b) + _bn(b) for a, b in levels)
  deploy = enc + fc7 + dec + _conv(64, 3)
  assert deploy == 25_051_395
  x, m = _zeros(1, 512, 512, 3), _zeros(1, 512, 512, 1)
  assert _count(_init_shapes(dih.DIH(parsing_classes=0), x, m)["params"]) == deploy
  concat_extra = sum(16 * a * b for a, b in levels[1:]) + 16 * 64 * 3
  joint = deploy + (dec + _conv(64, 26)) + concat_extra
  assert _count(_init_shapes(dih.DIH(), x, m)["params"]) == joint
  pred, logits = jax.eval_shape(lambda: dih.DIH().init_with_output(jax.random.key(0), x, m)[0])
  assert pred.shape == (1, 512, 512, 3) and logits.shape == (1, 512, 512, 26)


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
  block 2 takes its 128 OCR channels ('model'); the output is the image size."""
  from cpjax.models.hrnet import HRNetOCR  # pylint: disable=g-import-not-at-top
  x, m = _zeros(1, 64, 64, 3), _zeros(1, 64, 64, 1)
  out, variables = jax.eval_shape(lambda: dih.IDIHHRNet("w18s", depth=5).init_with_output(
      jax.random.key(0), x, m))
  backbone = _init_shapes(HRNetOCR("w18s"), x, m, False)
  idih = _init_shapes(dih.IDIH(depth=5, backbone_join_at=1), x, m, _zeros(1, 16, 16, 128))
  assert _count(variables["params"]["backbone"]) == _count(backbone["params"])
  assert _count(variables["params"]["model"]) == _count(idih["params"])
  assert out.shape == (1, 64, 64, 3)
