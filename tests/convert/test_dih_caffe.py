"""Converting the DIH Caffe model (`--model=dih512`): a .caffemodel written in caffe.proto's wire
format with the deploy_512 layers and random weights (`caffe_dih`) converts, its flax network
matches a PyTorch interpreter of the Caffe layers (1e-4 relative), and the converted directory
runs in `cpjax.tools.harmonize` with the deploy net's input normalisation. Plus the reader's
field numbers and the structural checks."""
from __future__ import annotations

import copy

import jax
import numpy as np
import pytest
from PIL import Image

from cpjax import convert
from cpjax.convert import caffe, checkpoint
from cpjax.convert.state_dict import ConversionError
from cpjax.models import dih
from cpjax.tools import convert as convert_tool
from cpjax.tools import harmonize

torch = pytest.importorskip("torch", reason="the Caffe reference forward runs in PyTorch: "
                            "pip install -e '.[torch]'")
from convert import caffe_dih as cd  # noqa: E402  (after the torch check)


def _relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def dih_caffe(tmp_path_factory):
  """(layers, converted directory, image [512, 512, 3] and mask [512, 512] in [0, 1] on the
  8-bit grid, reference blobs of that input)."""
  root = tmp_path_factory.mktemp("dih_caffe")
  layers = cd.dih_train_net(seed=0)
  model = root / "harmonize_iter_200000.caffemodel"
  model.write_bytes(cd.encode_net(layers))
  convert_tool.run(str(model), "dih512", str(root / "dih512"))
  rng = np.random.default_rng(1)
  yy, xx = np.mgrid[0:cd.SIZE, 0:cd.SIZE] / cd.SIZE
  image = np.stack([0.3 + 0.4 * yy, 0.5 + 0.3 * xx, 0.2 + 0.5 * yy * xx], -1)
  image = np.round(np.clip(image + 0.05 * rng.normal(size=image.shape), 0, 1) * 255) / 255
  mask = np.zeros((cd.SIZE, cd.SIZE))
  mask[100:300, 150:400] = 1.0
  reference = cd.caffe_forward(layers, cd.caffe_inputs(image, mask))
  return layers, root / "dih512", image, mask, reference


def test_dih512_matches_the_caffe_forward(dih_caffe):
  """The converted DIH gives Caffe's 'output-h' and 'output-seg' (max error / max value below
  1e-4) on the deploy net's inputs; converted.json names the deploy input space."""
  _, directory, image, mask, ref = dih_caffe
  converted = checkpoint.load(directory)
  assert converted.module_config["input_space"] == "caffe_bgr"
  inputs = {k: np.transpose(v, (0, 2, 3, 1)).astype(np.float32)
            for k, v in cd.caffe_inputs(image, mask).items()}
  pred, logits = jax.jit(dih.DIH().apply)(converted.variables, inputs["data"], inputs["mask"])
  assert _relative_error(np.asarray(pred), np.transpose(ref["output-h"], (0, 2, 3, 1))) < 1e-4
  assert _relative_error(np.asarray(logits), np.transpose(ref["output-seg"], (0, 2, 3, 1))) < 1e-4


def test_harmonize_tool_runs_the_converted_directory(dih_caffe, tmp_path):
  """python -m cpjax.tools.harmonize --workdir=<converted dih512>: inside the mask the
  demo's de-normalised 'output-h' (+ mean, BGR -> RGB, clipped), outside it the composite."""
  _, directory, image, mask, ref = dih_caffe
  Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp_path / "composite.png")
  Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "mask.png")
  result = harmonize.run(str(directory), str(tmp_path / "composite.png"),
                         str(tmp_path / "mask.png"), str(tmp_path / "out.png"))
  out_h = np.transpose(ref["output-h"][0], (1, 2, 0))
  demo = np.clip((out_h + np.asarray(cd.MEAN_BGR))[..., ::-1] / 255.0, 0.0, 1.0)
  expected = np.where(mask[..., None] > 0, demo, image)
  assert 0.05 < demo[mask > 0].std() and 0.0 < demo[mask > 0].mean() < 1.0   # not all clipped
  np.testing.assert_allclose(result, expected, atol=2e-4)
  assert np.asarray(Image.open(tmp_path / "out.png")).shape == (cd.SIZE, cd.SIZE, 3)


def _structure_only(layers: list[cd.Layer]) -> list[cd.Layer]:
  """The layers without weights: the structural checks run before any blob is read."""
  out = copy.deepcopy(layers)
  for layer in out:
    layer.blobs = []
  return out


def _layer(layers: list[cd.Layer], name: str) -> cd.Layer:
  return next(l for l in layers if l.name == name)


def _convert(layers: list[cd.Layer]) -> None:
  convert.convert("dih512", caffe.Net(caffe.parse_net(cd.encode_net(layers))))


def test_output_h_must_read_skip0_h_alone(dih_caffe):
  """A net whose output layer also reads the parsing decoder (concat of skip0-h and skip0-seg)
  is not the deploy net: refused, naming the layers found."""
  layers = _structure_only(dih_caffe[0])
  _layer(layers, "output-h").bottoms = ["concat-res0"]
  index = layers.index(_layer(layers, "output-h"))
  layers.insert(index, cd.Layer("concat-res0", "Concat", ["skip0-h", "skip0-seg"],
                                ["concat-res0"]))
  with pytest.raises(ConversionError, match="output-h should read 'skip0-h'.*concat-res0"):
    _convert(layers)


def test_harmonization_levels_must_concatenate_h_then_seg(dih_caffe):
  """concat-res{k} joins [skip{k}-h, skip{k}-seg] in that order (the flax input channels)."""
  layers = _structure_only(dih_caffe[0])
  concat = _layer(layers, "concat-res3")
  concat.bottoms = concat.bottoms[::-1]
  with pytest.raises(ConversionError, match=r"deconv2-h should read Concat\(skip3-h, skip3-seg\)"):
    _convert(layers)


def test_blocks_must_have_batchnorm_scale_elu(dih_caffe):
  layers = [l for l in _structure_only(dih_caffe[0]) if l.name != "deconv4-seg-scale"]
  with pytest.raises(ConversionError, match="deconv4-seg should be Deconvolution -> BatchNorm "
                                            "-> Scale -> ELU"):
    _convert(layers)


def test_reader_field_numbers():
  """A LayerParameter written by hand with caffe.proto's numbers: name, type, bottoms, tops,
  convolution_param (kernel_h / kernel_w, pad, stride defaults), a blob with `shape` and one
  with the legacy num / channels / height / width shape holding double_data."""
  params = (cd.uint_field(1, 5) + cd.uint_field(11, 3) + cd.uint_field(12, 2)
            + cd.uint_field(3, 1) + cd.uint_field(2, 0))      # num_output, kernel_h/w, pad, no bias
  legacy = (cd.uint_field(1, 1) + cd.uint_field(2, 1) + cd.uint_field(3, 2) + cd.uint_field(4, 3)
            + cd.bytes_field(8, np.arange(6, dtype="<f8").tobytes()))
  layer = (cd.bytes_field(1, b"c") + cd.bytes_field(2, b"Deconvolution") + cd.bytes_field(3, b"x")
           + cd.bytes_field(4, b"y") + cd.bytes_field(106, params)
           + cd.bytes_field(7, cd.blob_proto(np.ones((2, 5, 3, 2))))
           + cd.bytes_field(7, legacy))
  (parsed,) = caffe.parse_net(cd.bytes_field(100, layer))
  assert (parsed.name, parsed.type, parsed.bottoms, parsed.tops) == ("c", "Deconvolution",
                                                                       ("x",), ("y",))
  assert parsed.params == {"num_output": 5, "bias_term": False, "kernel": (3, 2),
                           "stride": (1, 1), "pad": (1, 1), "group": 1, "dilation": (1,)}
  assert parsed.blobs[0].shape == (2, 5, 3, 2) and parsed.blobs[0].dtype == np.float32
  np.testing.assert_array_equal(parsed.blobs[1], np.arange(6).reshape(1, 1, 2, 3))


def test_reader_errors(tmp_path):
  """Not a protobuf, no layers, and the legacy V1 `layers` field: one-line errors."""
  with pytest.raises(ConversionError, match="not a Caffe model"):
    caffe.parse_net(b"\xff\xff\xff", "x.caffemodel")
  with pytest.raises(ConversionError, match="holds no Caffe layers"):
    caffe.parse_net(cd.bytes_field(1, b"net"), "x.caffemodel")
  with pytest.raises(ConversionError, match="legacy V1 layer format"):
    caffe.parse_net(cd.bytes_field(2, cd.bytes_field(4, b"conv1")), "x.caffemodel")
  (tmp_path / "a.caffemodel").write_bytes(b"\xff\xff\xff")
  with pytest.raises(ValueError, match="not a Caffe model"):
    convert_tool.run(str(tmp_path / "a.caffemodel"), "dih512", str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
