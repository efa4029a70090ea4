"""The conversion framework: layout rules against PyTorch, strict key accounting, the
converted-weights directory, and the tool's errors."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from cpjax import convert
from cpjax.convert import checkpoint
from cpjax.convert.state_dict import ConversionError, StateDict, check_tree, strip_prefix
from cpjax.tools import convert as convert_tool

torch = pytest.importorskip("torch", reason="PyTorch is needed for layout parity: pip install -e '.[torch]'")


def _to_nchw(x: np.ndarray) -> "torch.Tensor":
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _to_nhwc(t: "torch.Tensor") -> np.ndarray:
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), (2, 3)])
def test_conv_layout_matches_torch(stride, padding):
  """Conv2d weights mapped by StateDict.conv give torch's output in a flax Conv."""
  conv = torch.nn.Conv2d(3, 5, 3, stride=stride, padding=padding)
  x = np.random.default_rng(0).normal(size=(2, 9, 11, 3)).astype(np.float32)
  sd = StateDict({f"c.{k}": v.numpy() for k, v in conv.state_dict().items()})
  params = sd.conv("c")
  sd.check_all_used()
  flax_conv = nn.Conv(5, (3, 3), strides=stride, padding=[(padding, padding)] * 2)
  out = flax_conv.apply({"params": params}, x)
  np.testing.assert_allclose(out, _to_nhwc(conv(_to_nchw(x))), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding", [(4, 2, 1), (4, 2, 0), (16, 8, 0), (3, 1, 1)])
def test_conv_transpose_layout_matches_torch(kernel, stride, padding):
  """ConvTranspose2d(k, s, p) == flax ConvTranspose with the flipped kernel and padding
  k - 1 - p per side (the rule converters use)."""
  deconv = torch.nn.ConvTranspose2d(3, 4, kernel, stride=stride, padding=padding)
  x = np.random.default_rng(1).normal(size=(2, 5, 6, 3)).astype(np.float32)
  sd = StateDict({f"d.{k}": v.numpy() for k, v in deconv.state_dict().items()})
  params = sd.conv_transpose("d")
  pad = kernel - 1 - padding
  flax_deconv = nn.ConvTranspose(4, (kernel, kernel), strides=(stride, stride),
                                 padding=[(pad, pad)] * 2)
  out = flax_deconv.apply({"params": params}, x)
  np.testing.assert_allclose(out, _to_nhwc(deconv(_to_nchw(x))), rtol=1e-5, atol=1e-5)


def test_dense_and_batch_norm_layout_match_torch():
  """Linear and eval-mode BatchNorm2d (eps 1e-5, running stats) map onto Dense / BatchNorm."""
  linear = torch.nn.Linear(6, 4)
  bn = torch.nn.BatchNorm2d(3).eval()
  with torch.no_grad():
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.uniform_(0.5, 2)
    bn.bias.uniform_(-1, 1)
  arrays = {f"fc.{k}": v.numpy() for k, v in linear.state_dict().items()}
  arrays.update({f"bn.{k}": v.numpy() for k, v in bn.state_dict().items()})
  sd = StateDict(arrays)
  dense = sd.dense("fc")
  bn_params, bn_stats = sd.batch_norm("bn")
  sd.check_all_used()
  v = np.random.default_rng(2).normal(size=(2, 6)).astype(np.float32)
  np.testing.assert_allclose(nn.Dense(4).apply({"params": dense}, v),
                             linear(torch.from_numpy(v)).detach().numpy(), rtol=1e-5, atol=1e-6)
  x = np.random.default_rng(3).normal(size=(2, 4, 5, 3)).astype(np.float32)
  out = nn.BatchNorm(use_running_average=True, epsilon=1e-5).apply(
      {"params": bn_params, "batch_stats": bn_stats}, x)
  np.testing.assert_allclose(out, _to_nhwc(bn(_to_nchw(x))), rtol=1e-5, atol=1e-5)


def test_unused_and_missing_keys_are_listed():
  sd = StateDict({"a.weight": np.zeros((2, 2)), "a.bias": np.zeros(2), "extra.weight": np.zeros(1)})
  sd.dense("a")
  with pytest.raises(ConversionError, match="1 keys .* no place in the target module: extra.weight"):
    sd.check_all_used()
  with pytest.raises(ConversionError, match="no key 'b.weight' .* not used so far: extra.weight"):
    sd.take("b.weight")
  sd.drop("extra.")
  sd.check_all_used()
  assert sd.dropped == ["extra.weight"]


def test_check_tree_names_missing_unexpected_and_misshaped():
  want = {"params": {"conv": {"kernel": jnp.zeros((3, 3, 1, 2)), "bias": jnp.zeros(2)},
                     "head": {"kernel": jnp.zeros((2, 1))}}}
  got = {"params": {"conv": {"kernel": np.zeros((3, 3, 1, 4)), "bias": np.zeros(2)},
                    "other": {"kernel": np.zeros((2, 1))}}}
  with pytest.raises(ConversionError) as info:
    check_tree(want, got)
  message = str(info.value)
  assert "missing (would stay at random init): params/head/kernel" in message
  assert "not in the module: params/other/kernel" in message
  assert "params/conv/kernel (3, 3, 1, 4) (module wants (3, 3, 1, 2))" in message


def test_strip_prefix_only_when_every_key_has_it():
  assert list(strip_prefix({"module.a": 1, "module.b": 2}, "module.")) == ["a", "b"]
  assert list(strip_prefix({"module.a": 1, "b": 2}, "module.")) == ["module.a", "b"]


def test_converted_directory_round_trip_and_no_overwrite(tmp_path):
  variables = {"params": {"conv": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)}}}
  converted = convert.Converted("toy", variables, {"width": 3}, ["x.weight"])
  out = checkpoint.save(converted, tmp_path / "w", {"path": "toy.pth", "sha256": "0"})
  back = checkpoint.load(out)
  assert back.model == "toy" and back.module_config == {"width": 3} and back.dropped == ["x.weight"]
  np.testing.assert_array_equal(back.variables["params"]["conv"]["kernel"],
                                variables["params"]["conv"]["kernel"])
  with pytest.raises(FileExistsError, match="not empty"):
    checkpoint.save(converted, out, {})
  with pytest.raises(FileNotFoundError, match="python -m cpjax.tools.convert"):
    checkpoint.load(tmp_path)


def test_tool_reads_nested_data_parallel_checkpoints(tmp_path):
  """A {'state_dict': {'module.x': tensor}} file comes out as {'x': array}."""
  path = tmp_path / "ckpt.pth"
  torch.save({"epoch": 3, "state_dict": {"module.conv.weight": torch.ones(2, 1, 3, 3)}}, path)
  arrays = convert_tool.read_state_dict(path)
  assert list(arrays) == ["conv.weight"] and arrays["conv.weight"].shape == (2, 1, 3, 3)


def test_tool_errors_are_one_line(tmp_path):
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"not a checkpoint")
  with pytest.raises(convert_tool.ToolError, match=r"bad\.pth is not a PyTorch checkpoint \(it "
                     r"starts with text\); --from takes a \.pth or \.pt file"):
    convert_tool.read_state_dict(bad)
  with pytest.raises(convert_tool.ToolError, match="no such file"):
    convert_tool.read_state_dict(tmp_path / "missing.pth")
  with pytest.raises(convert_tool.ToolError, match="--model=nope is unknown"):
    convert_tool.run(str(bad), "nope", str(tmp_path / "out"))


def test_dropped_keys_are_summarized_by_module():
  keys = [f"incre_modules.{i}.weight" for i in range(60)] + ["classifier.weight", "classifier.bias"]
  assert convert_tool.summarize_keys(keys) == ("classifier.weight, classifier.bias, "
                                               "incre_modules.* (60 keys)")
