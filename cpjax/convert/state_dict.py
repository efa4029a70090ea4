"""PyTorch state dicts as NumPy, and the layout rules that map them onto flax modules.

Nothing here imports torch: `cpjax.tools.convert` reads the file and hands over a
`{name: np.ndarray}` dict, so converters and their tests run on plain arrays.

Layouts (PyTorch -> flax.linen):
  Conv2d weight            [O, I, kh, kw] -> Conv kernel [kh, kw, I, O]          (`conv_kernel`)
  ConvTranspose2d weight   [I, O, kh, kw] -> ConvTranspose kernel [kh, kw, I, O], spatially
                           flipped, for `nn.ConvTranspose(..., transpose_kernel=False)` with
                           padding (k - 1 - p) per side for PyTorch padding p
                           (`conv_transpose_kernel`)
  Linear weight            [O, I] -> Dense kernel [I, O]                          (`dense_kernel`)
  BatchNorm2d              weight, bias, running_mean, running_var -> params scale, bias and
                           batch_stats mean, var (`batch_norm`)
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

Tree = dict[str, Any]


class ConversionError(ValueError):
  """A state dict that does not fit the target module; the message lists the offending keys."""


def _listing(names: Iterable[str], limit: int = 12) -> str:
  names = sorted(names)
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def conv_kernel(weight: np.ndarray) -> np.ndarray:
  """Conv2d weight [O, I, kh, kw] -> flax Conv kernel [kh, kw, I, O]."""
  return np.transpose(weight, (2, 3, 1, 0))


def conv_transpose_kernel(weight: np.ndarray) -> np.ndarray:
  """ConvTranspose2d weight [I, O, kh, kw] -> flax ConvTranspose kernel [kh, kw, I, O].

  flax's ConvTranspose (transpose_kernel=False) correlates the dilated input with its kernel,
  while PyTorch's transposed conv is the gradient of a correlation: the kernel is flipped in
  both spatial axes.
  """
  return np.ascontiguousarray(np.transpose(weight, (2, 3, 0, 1))[::-1, ::-1])


def dense_kernel(weight: np.ndarray) -> np.ndarray:
  """Linear weight [O, I] -> flax Dense kernel [I, O]."""
  return np.transpose(weight, (1, 0))


class StateDict:
  """A read-once view of a state dict: every key must be used or explicitly dropped.

  `take` returns an array and marks its key used; `drop` records keys that the target module
  does not have on purpose (reported to the user); `check_all_used` fails listing the rest.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self._arrays = {k: np.asarray(v) for k, v in arrays.items()}
    self._used: set[str] = set()
    self.dropped: list[str] = []

  def __contains__(self, key: str) -> bool:
    return key in self._arrays

  def keys(self) -> list[str]:
    return list(self._arrays)

  def take(self, key: str) -> np.ndarray:
    if key not in self._arrays:
      unused = [k for k in self._arrays if k not in self._used]
      raise ConversionError(
          f"the state dict has no key {key!r} (the target layout needs it); keys of the file not "
          f"used so far: {_listing(unused) or 'none'}; is --model the right architecture?")
    self._used.add(key)
    return self._arrays[key].astype(np.float32)

  def drop(self, prefix: str) -> None:
    """Mark every key starting with `prefix` as deliberately unused."""
    keys = [k for k in self._arrays if k.startswith(prefix)]
    self._used.update(keys)
    self.dropped.extend(sorted(keys))

  def conv(self, prefix: str, bias: bool = True) -> Tree:
    """{'kernel', 'bias'} of a Conv2d at `prefix`."""
    out = {"kernel": conv_kernel(self.take(f"{prefix}.weight"))}
    if bias:
      out["bias"] = self.take(f"{prefix}.bias")
    return out

  def conv_transpose(self, prefix: str, bias: bool = True) -> Tree:
    out = {"kernel": conv_transpose_kernel(self.take(f"{prefix}.weight"))}
    if bias:
      out["bias"] = self.take(f"{prefix}.bias")
    return out

  def dense(self, prefix: str) -> Tree:
    return {"kernel": dense_kernel(self.take(f"{prefix}.weight")),
            "bias": self.take(f"{prefix}.bias")}

  def batch_norm(self, prefix: str) -> tuple[Tree, Tree]:
    """(params {'scale', 'bias'}, batch_stats {'mean', 'var'}) of a BatchNorm2d at `prefix`.

    `num_batches_tracked` is consumed (it only matters for momentum=None in PyTorch).
    """
    if f"{prefix}.num_batches_tracked" in self._arrays:
      self._used.add(f"{prefix}.num_batches_tracked")
    return ({"scale": self.take(f"{prefix}.weight"), "bias": self.take(f"{prefix}.bias")},
            {"mean": self.take(f"{prefix}.running_mean"),
             "var": self.take(f"{prefix}.running_var")})

  def check_all_used(self) -> None:
    unused = [k for k in self._arrays if k not in self._used]
    if unused:
      raise ConversionError(f"{len(unused)} keys of the state dict have no place in the target "
                            f"module: {_listing(unused)}; is --model the right architecture?")


def strip_prefix(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """Remove `prefix` (e.g. DataParallel's 'module.') when every key carries it."""
  if arrays and all(k.startswith(prefix) for k in arrays):
    return {k[len(prefix):]: v for k, v in arrays.items()}
  return dict(arrays)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested mappings -> {'a/b/c': leaf}."""
  out = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      out.update(flatten(value, path))
    else:
      out[path] = value
  return out


def check_tree(expected: Mapping[str, Any], converted: Mapping[str, Any]) -> None:
  """The converted variables have exactly the expected leaves and shapes.

  Args:
    expected: variables of the target module, leaves with `.shape` (e.g. from jax.eval_shape).
    converted: the converted variables (NumPy leaves).

  Raises:
    ConversionError: listing missing, unexpected and mis-shaped leaves (by '/'-joined path).
  """
  want, got = flatten(expected), flatten(converted)
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  misshaped = [f"{k} {tuple(got[k].shape)} (module wants {tuple(want[k].shape)})"
               for k in sorted(set(want) & set(got)) if tuple(want[k].shape) != tuple(got[k].shape)]
  problems = []
  if missing:
    problems.append(f"missing (would stay at random init): {_listing(missing)}")
  if unexpected:
    problems.append(f"not in the module: {_listing(unexpected)}")
  if misshaped:
    problems.append(f"wrong shapes: {_listing(misshaped)}")
  if problems:
    raise ConversionError("the converted weights do not fit the module; " + "; ".join(problems))
