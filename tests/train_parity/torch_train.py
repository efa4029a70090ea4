"""Shared pieces of the training-parity tests (not a test module).

A parity test runs the reference's training step in PyTorch and cpjax's `train_step` from the
same weights on the same batches. Random draws cannot be made alike across the two frameworks,
so the draws cpjax makes inside its jitted step (dropout masks, noise images, interpolates)
are recorded with `jax.debug.callback` from flax method interceptors, and the PyTorch side
replays them (`Replay`). Everything here runs on one thread, like the conversion tests.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import skimage.data
import torch

from convert.torch_iharm import nchw, nhwc, one_thread, state_dict

__all__ = ["Recorder", "Replay", "flat", "move_errors", "nchw", "nhwc",
           "one_thread", "photos", "record_dropout", "state_dict"]

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def photos(count: int, size: int, first: int = 0) -> np.ndarray:
  """[count, size, size, 3] uint8: the top-left 300 x 300 of photos bundled with scikit-image
  (`PHOTOS`, cycled from index `first`), resized by area averaging."""
  return np.stack([cv2.resize(getattr(skimage.data, PHOTOS[(first + i) % len(PHOTOS)])()
                              [:300, :300], (size, size), interpolation=cv2.INTER_AREA)
                   for i in range(count)])


class Recorder:
  """Values (pytrees) recorded from inside jitted code, by traced call site.

  Each traced call site gets a slot, named by the caller, when it is traced; its runtime values
  are appended to that slot, so the order does not depend on the order in which XLA runs the
  callbacks.
  """

  def __init__(self):
    self.slots: list[list[Any]] = []
    self.names: list[str] = []

  def record(self, value: Any, name: str = "") -> None:
    slot: list[Any] = []
    self.slots.append(slot)
    self.names.append(name)
    jax.debug.callback(lambda v: slot.append(jax.tree.map(np.array, v)), value)

  def take(self, site: int, call: int) -> Any:
    """The value of the `call`-th run of the `site`-th traced call site."""
    return self.slots[site][call]

  def named(self, name: str) -> list[list[Any]]:
    """The slots recorded under `name`, in tracing order."""
    return [slot for slot, n in zip(self.slots, self.names) if n == name]


@contextlib.contextmanager
def record_dropout(recorder: Recorder, check: Callable[[nn.Dropout], None] = lambda m: None
                   ) -> Iterator[None]:
  """Inside: every flax `nn.Dropout` call records the mask it applies (its own draw: the module
  is called on ones, so the draw uses the module's rng exactly as on the real input) and
  returns input * mask, which equals the module's output and gradient. `check` sees each
  Dropout module (e.g. to assert its rate). Trace the step inside the context."""

  def interceptor(next_fun, args, kwargs, context):
    if not isinstance(context.module, nn.Dropout) or context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    check(context.module)
    x = args[0]
    kept = next_fun(jnp.ones_like(x), *args[1:], **kwargs)   # 0 or 1 / (1 - rate)
    recorder.record(kept)
    return x * kept

  with nn.intercept_methods(interceptor):
    yield


class Replay(torch.nn.Module):
  """A PyTorch stand-in for a random layer: multiplies by the next recorded NHWC mask."""

  def __init__(self, masks: Callable[[], np.ndarray]):
    super().__init__()
    self.masks = masks

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x * nchw(self.masks()).to(x.dtype)


def flat(tree: Any) -> dict[str, np.ndarray]:
  """A pytree's leaves as NumPy arrays by '/'-joined path."""
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def move_errors(ours: Any, reference: Any, initial: Any) -> dict[str, tuple[float, float]]:
  """Per leaf of three trees with the same paths and shapes (checked): how far our training
  moved it compared with the reference's, as (||ours - reference|| / ||reference - initial||,
  ||ours - initial|| / ||reference - initial||): the error relative to the move, and the ratio
  of the move sizes. A leaf the reference left unchanged gives (0, 0) if ours is unchanged too,
  else infinities."""
  a, b, c = flat(ours), flat(reference), flat(initial)
  assert sorted(a) == sorted(b) == sorted(c), sorted(set(a) ^ set(b))
  out = {}
  for path, ref in b.items():
    assert a[path].shape == ref.shape == c[path].shape, path
    move = np.linalg.norm(ref - c[path])
    if move == 0:
      out[path] = (0.0, 0.0) if np.array_equal(a[path], ref) else (np.inf, np.inf)
      continue
    out[path] = (float(np.linalg.norm(a[path] - ref) / move),
                 float(np.linalg.norm(a[path] - c[path]) / move))
  return out
