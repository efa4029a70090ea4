"""HRNetV2 ImageNet weights -> the trunk of `cpjax.models.hrnet` (iDIH-HRNet's backbone).

Models (`--model` of `python -m cpjax.tools.convert`), files of HRNet/HRNet-Image-Classification:
  hrnet_w18s  hrnet_w18_small_model_v2.pth        (HRNet-W18-C-Small-v2)
  hrnet_w18   hrnetv2_w18_imagenet_pretrained.pth (HRNet-W18-C)
  hrnet_w32   hrnetv2_w32_imagenet_pretrained.pth (HRNet-W32-C)

State-dict keys: the trunk conv1, bn1, conv2, bn2, layer1.*, transition{1,2,3}.*, stage{2,3,4}.*
(the names `cpjax.models.hrnet` mirrors one to one), and the classification head incre_modules.*,
downsamp_modules.*, final_layer.*, classifier.*, which HRNetV2 for dense prediction does not have:
they are dropped and reported, as the harmonisation reference's `load_pretrained_weights` skips
every key its network lacks.

Converted variables: those of `HRNetV2(SPECS[width])`, {'params': {'conv1', 'bn1', ..., 'stage4'},
'batch_stats': {...}}, i.e. the 'hrnet' scope of `HRNetOCR` (what `model.backbone_init` of the
harmonisation task fills). The classification network upsamples with nearest neighbours in its
fusions, the harmonisation reference (and cpjax) bilinearly with align_corners=True: the
reference fine-tunes these weights under its own fusion, as cpjax does.

`module_variables` is the generic mapping every converter of this family uses: it walks the flax
module's own variable tree and takes each module's tensors from the state-dict prefix that a
naming function gives for its path.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp

from cpjax.convert import Converted
from cpjax.convert.state_dict import ConversionError, StateDict, Tree, check_tree
from cpjax.models import hrnet

Path = tuple[str, ...]

# --model name -> HRNetV2 variant (`cpjax.models.hrnet.SPECS`).
WIDTHS = {"hrnet_w18s": "w18s", "hrnet_w18": "w18", "hrnet_w32": "w32"}
FILES = {"hrnet_w18s": "hrnet_w18_small_model_v2.pth",
         "hrnet_w18": "hrnetv2_w18_imagenet_pretrained.pth",
         "hrnet_w32": "hrnetv2_w32_imagenet_pretrained.pth"}
# The ImageNet classification head of HRNet-Image-Classification (not part of HRNetV2).
CLASSIFICATION_HEAD = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def expected_variables(module: nn.Module, *inputs: jax.Array) -> Tree:
  """The variable shapes of `module` (ShapeDtypeStructs; nothing is computed)."""
  return jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs, train=False))


def _modules(tree: Tree, path: Path = ()) -> Iterator[tuple[Path, Tree]]:
  """(path, {leaf name: leaf}) of every module that has variables of its own."""
  leaves = {k: v for k, v in tree.items() if not isinstance(v, dict)}
  if leaves:
    yield path, leaves
  for name, sub in tree.items():
    if isinstance(sub, dict):
      yield from _modules(sub, path + (name,))


def _put(tree: Tree, path: Path, value: Any) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def module_variables(sd: StateDict, expected: Tree, torch_name: Callable[[Path], str],
                     transposed: Callable[[Path], bool] = lambda path: False) -> Tree:
  """Flax variables shaped like `expected`, each module's tensors taken from the state dict.

  Rules by the module's leaves: BatchNorm (a 'batch_stats' entry at the same path) <- weight,
  bias, running_mean, running_var; Conv / ConvTranspose ('kernel' [, 'bias']) <- weight [, bias]
  (`transposed(path)` picks the transposed-conv layout); a lone 'scale' <- '<name>.scale'
  (the reference's ScaleLayer).

  Args:
    sd: the state dict (keys it takes are marked used).
    expected: {'params': ..., ['batch_stats': ...]} of the target module (`expected_variables`).
    torch_name: flax module path -> its state-dict prefix.
    transposed: whether the module at a path is a transposed conv.

  Returns:
    {'params': ..., ['batch_stats': ...]} with float32 NumPy leaves, checked against `expected`.

  Raises:
    ConversionError: a missing key, a wrong shape, or a module of a kind with no rule.
  """
  norm_paths = {p for p, _ in _modules(expected.get("batch_stats", {}))}
  params: Tree = {}
  stats: Tree = {}
  for path, leaves in _modules(expected["params"]):
    name = torch_name(path)
    if path in norm_paths:
      p, s = sd.batch_norm(name)
      _put(params, path, p)
      _put(stats, path, s)
    elif "kernel" in leaves:
      take = sd.conv_transpose if transposed(path) else sd.conv
      _put(params, path, take(name, bias="bias" in leaves))
    elif set(leaves) == {"scale"}:
      _put(params, path, {"scale": sd.take(f"{name}.scale")})
    else:
      raise ConversionError(f"no conversion rule for the module {'/'.join(path)} "
                            f"(leaves {sorted(leaves)})")
  variables = {"params": params, **({"batch_stats": stats} if stats else {})}
  check_tree(expected, variables)
  return variables


@functools.lru_cache(maxsize=None)
def trunk_expected(width: str) -> Tree:
  """Variable shapes of the HRNetV2 trunk `width` (they do not depend on the image size;
  cached: tracing HRNet takes seconds)."""
  x = jnp.zeros((1, 64, 64, 3), jnp.float32)
  return expected_variables(hrnet.HRNetV2(hrnet.SPECS[width]), x, None)


def _imagenet(model: str) -> Callable[[StateDict], Converted]:
  def convert(sd: StateDict) -> Converted:
    for prefix in CLASSIFICATION_HEAD:
      sd.drop(prefix)
    width = WIDTHS[model]
    variables = module_variables(sd, trunk_expected(width), ".".join)
    return Converted(model, variables, {"hrnet_width": width})
  convert.__doc__ = f"{FILES[model]} -> HRNetV2 '{WIDTHS[model]}' trunk variables."
  return convert


hrnet_w18s = _imagenet("hrnet_w18s")
hrnet_w18 = _imagenet("hrnet_w18")
hrnet_w32 = _imagenet("hrnet_w32")
