"""Host-side input pipelines of the training loop: grain datasets of uint8 image batches.

Data config fields (`default_data_config()` gives a ConfigDict with the defaults; a plain dict
works too and missing fields take the defaults):

  source        spec string of the images, see `data_pipelines.sources` ('folder:/path',
                'cityscapes:/root:split', 'tfds:NAME[/CONFIG][:VERSION]:SPLIT[@DATA_DIR]',
                'samples', 'samples:train', 'samples:eval').              default 'samples'
  image_size    crop size: int (square) or (h, w).                         default 256
  resize        None (keep), int (shorter side to this, aspect kept) or (h, w) (exact): applied
                to the whole image before cropping, e.g. (512, 1024) for Cityscapes 1024x2048.
                                                                           default None
  crop          'random' (uniform offset) or 'center'; evaluation always crops the center.
                                                                           default 'random'
  flip          random horizontal flip with probability 1/2 (training only). default True
  workers       grain worker processes (mp_prefetch); 0 reads in the calling process.
                                                                           default 0
  prefetch      batches prepared ahead (per worker with workers > 0); also the number of reader
                threads; 0 reads synchronously.                            default 2
  image_key     image feature of a TFDS source.                            default 'image'
  max_examples  evaluation only: use the first max_examples examples (None = all).
                                                                           default None
  repeats       evaluation only: each item yields this many consecutive examples with distinct
                'index' (tasks that draw random problems per example, like copy-paste, then
                evaluate several problems per held-out image).             default 1

Per example: decode (the source) -> `resize` -> if smaller than `image_size`, upscale (aspect
kept) until it covers it (the shorter side of a square crop becomes the crop size) -> crop ->
flip. Images of any size and aspect ratio can be mixed.

Training stream and sharding (`train_dataset`, `train_iterator`). The global example stream is
a shuffle of the source with `seed`, repeated forever with a new shuffle per epoch
(`grain.MapDataset.range(n).shuffle(seed).repeat()`): stream position g holds source item
order[g]. The global batch of step s is positions [s*B, (s+1)*B); process p of P gets the
contiguous chunk [s*B + p*B/P, s*B + (p+1)*B/P), so concatenating the processes' batches gives
the one-process batch, and each process reads and decodes only its own examples. Random crop
offsets and flips come from `np.random.default_rng([seed, g])`: a function of the seed and the
stream position only, not of the number of processes, workers or threads. Batches are dicts:

  image    uint8 [B/P, h, w, 3]
  index    int32 [B/P]  the global stream position g (modulo 2**31), for per-example device keys
  skipped  int32 [B/P]  undecodable items skipped to produce this example (normally 0)

An item that cannot be decoded is replaced by the next item of the source (order[g] + 1, + 2,
... wrapping around) that decodes; `skipped` counts the items passed over and a warning names
each bad path once per process. If no item decodes the pipeline raises. The iterator is a grain
`DatasetIterator`: `get_state()` / `set_state()` save and restore the position (also with
workers > 0), so a restarted run continues the same stream.

Evaluation (`eval_dataset`, `eval_batches`): examples 0 .. N-1 (example j is item
j // repeats) in source order (no shuffle),
center crop, no flip, the same contiguous split of each global batch over processes; the last
global batch is padded with zero images. Batches: image uint8 [B/P, h, w, 3], index int32 [B/P]
(the example's position, also on padding), valid bool [B/P] (False on padding). An item
that cannot be decoded raises an error naming the file.

grain worker processes (workers > 0) need absl flags parsed: run under `absl.app.run`, or call
`absl.flags.FLAGS.mark_as_parsed()` first (tests do).
"""
from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Any, Iterator, Mapping, Union

import grain
import ml_collections
import numpy as np
from absl import flags
from absl import logging

from data_pipelines import image_ops
from data_pipelines import sources

Batch = dict[str, np.ndarray]
DataConfig = Union[ml_collections.ConfigDict, Mapping[str, Any]]

_DEFAULTS = dict(source="samples", image_size=256, resize=None, crop="random", flip=True,
                 workers=0, prefetch=2, image_key="image", max_examples=None, repeats=1)
_CROPS = ("random", "center")


def default_data_config() -> ml_collections.ConfigDict:
  """A data config with every field at its default (see the module docstring).

  Not type-locked, so `image_size` / `resize` may be changed between int and (h, w).
  """
  return ml_collections.ConfigDict(dict(_DEFAULTS), type_safe=False)


@dataclasses.dataclass(frozen=True)
class _Settings:
  """A checked data config."""
  source: str
  image_size: tuple[int, int]
  resize: Any
  crop: str
  flip: bool
  workers: int
  prefetch: int
  image_key: str
  max_examples: int | None
  repeats: int


def _settings(cfg: DataConfig) -> _Settings:
  """Read and check a data config; missing fields take their defaults."""
  get = lambda key: cfg.get(key, _DEFAULTS[key])  # pylint: disable=unnecessary-lambda-assignment
  crop = get("crop")
  if crop not in _CROPS:
    raise ValueError(f"data.crop is {crop!r}; use 'random' or 'center'")
  resize = get("resize")
  if resize is not None:
    image_ops.resized_shape(1, 1, resize)  # checks the form
    if not isinstance(resize, (int, np.integer)):
      resize = image_ops.pair(resize)
  workers, prefetch = int(get("workers")), int(get("prefetch"))
  if workers < 0 or prefetch < 0:
    raise ValueError(f"data.workers ({workers}) and data.prefetch ({prefetch}) must be >= 0")
  max_examples = get("max_examples")
  if max_examples is not None and int(max_examples) <= 0:
    raise ValueError(f"data.max_examples is {max_examples}; use a positive number or None")
  repeats = int(get("repeats"))
  if repeats < 1:
    raise ValueError(f"data.repeats is {repeats}; use 1 or more")
  return _Settings(source=get("source"), image_size=image_ops.pair(get("image_size")),
                   resize=resize, crop=crop, flip=bool(get("flip")), workers=workers,
                   prefetch=prefetch, image_key=get("image_key"),
                   max_examples=None if max_examples is None else int(max_examples),
                   repeats=repeats)


def _local_batch_size(batch_size: int, process_index: int, process_count: int) -> int:
  """B / P, checked."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, process_count "
                     f"{process_count})")
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(f"global batch size {batch_size} is not divisible by the number of "
                     f"processes {process_count}; choose a multiple of {process_count}")
  return batch_size // process_count


def _global_position(local: int, batch_size: int, local_batch: int, process_index: int) -> int:
  """Stream position of a process's `local`-th example: its chunk of each global batch."""
  step, k = divmod(local, local_batch)
  return step * batch_size + process_index * local_batch + k


def _prepare(image: np.ndarray, settings: _Settings, rng: np.random.Generator | None
             ) -> np.ndarray:
  """resize -> cover the crop -> crop (random with rng, else center) -> flip (with rng)."""
  image = image_ops.resize_to_spec(image, settings.resize)
  image = image_ops.cover(image, settings.image_size)
  if rng is not None and settings.crop == "random":
    image = image_ops.random_crop(image, settings.image_size, rng)
  else:
    image = image_ops.center_crop(image, settings.image_size)
  if rng is not None and settings.flip and rng.random() < 0.5:
    image = image_ops.flip_left_right(image)
  return np.ascontiguousarray(image)


_warned_paths: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(error: image_ops.DecodeError) -> None:
  """Log a skipped file once per path and process."""
  with _warned_lock:
    if error.path in _warned_paths:
      return
    _warned_paths.add(error.path)
  logging.warning("skipping undecodable training image %s: %s (replaced by the next image of "
                  "the source; remove or replace the file)", error.path, error.reason)


def _read_skipping(source, start: int) -> tuple[dict[str, Any], int]:
  """source[start], or the next item (wrapping around) that decodes; and how many were skipped."""
  n = len(source)
  first_error = None
  for skipped in range(n):
    try:
      return source[(start + skipped) % n], skipped
    except image_ops.DecodeError as e:
      first_error = first_error or e
      _warn_once(e)
  raise ValueError(f"none of the {n} images of {source!r} can be decoded (first: {first_error}); "
                   "check the data source")


class _TrainExample:
  """Local example j of a process -> {'image', 'index', 'skipped'} (picklable for workers)."""

  def __init__(self, source, settings: _Settings, seed: int, batch_size: int, local_batch: int,
               process_index: int):
    self._source, self._settings, self._seed = source, settings, seed
    self._batch_size, self._local_batch, self._process_index = (
        batch_size, local_batch, process_index)
    self._n = len(source)
    self._order = grain.MapDataset.range(self._n).shuffle(seed=seed).repeat()

  def __call__(self, local: int) -> dict[str, np.ndarray]:
    position = _global_position(local, self._batch_size, self._local_batch, self._process_index)
    example, skipped = _read_skipping(self._source, int(self._order[position]) % self._n)
    rng = np.random.default_rng([self._seed, position])
    return {"image": _prepare(example["image"], self._settings, rng),
            "index": np.int32(position % 2**31), "skipped": np.int32(skipped)}


class _EvalExample:
  """Local example j of a process -> {'image', 'index', 'valid'}; zeros past the end."""

  def __init__(self, source, settings: _Settings, num_examples: int, batch_size: int,
               local_batch: int, process_index: int):
    self._source, self._settings, self._num_examples = source, settings, num_examples
    self._batch_size, self._local_batch, self._process_index = (
        batch_size, local_batch, process_index)

  def __call__(self, local: int) -> dict[str, np.ndarray]:
    position = _global_position(local, self._batch_size, self._local_batch, self._process_index)
    if position >= self._num_examples:
      image = np.zeros((*self._settings.image_size, 3), np.uint8)
      return {"image": image, "index": np.int32(position), "valid": np.bool_(False)}
    example = self._source[position // self._settings.repeats]  # a DecodeError names the file
    return {"image": _prepare(example["image"], self._settings, None),
            "index": np.int32(position), "valid": np.bool_(True)}


def _check_flags_for_workers(workers: int) -> None:
  if workers > 0 and not flags.FLAGS.is_parsed():
    raise RuntimeError("data.workers > 0 starts grain worker processes, which need absl flags "
                       "parsed: run under absl.app.run, or call "
                       "absl.flags.FLAGS.mark_as_parsed() first (or set data.workers = 0)")


def _to_plain_arrays(batch: Batch) -> Batch:
  """Copy a batch out of grain's shared memory into ordinary NumPy arrays."""
  return {key: np.array(value, copy=True) for key, value in batch.items()}


def _to_iter_dataset(ds: grain.MapDataset, settings: _Settings) -> grain.IterDataset:
  """Thread prefetch in-process, and worker processes when settings.workers > 0."""
  read = grain.ReadOptions(num_threads=settings.prefetch, prefetch_buffer_size=settings.prefetch)
  it_ds = ds.to_iter_dataset(read)
  if settings.workers > 0:
    _check_flags_for_workers(settings.workers)
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=settings.workers, per_worker_buffer_size=max(1, settings.prefetch)))
    # Workers hand over arrays in shared memory that is released only when the array is garbage
    # collected; copying into ordinary arrays frees it at once (a few MB per batch).
    it_ds = it_ds.map(_to_plain_arrays)
  return it_ds


def train_dataset(data_cfg: DataConfig, *, global_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """This process's infinite stream of training batches (see the module docstring).

  Args:
    data_cfg: data config (ConfigDict or mapping; fields in the module docstring).
    global_batch_size: B, summed over processes; divisible by process_count.
    seed: shuffle and augmentation seed, in [0, 2**32).
    process_index, process_count: this process and the number of processes (P).

  Returns:
    A grain IterDataset of {'image': uint8 [B/P, h, w, 3], 'index': int32 [B/P],
    'skipped': int32 [B/P]}.
  """
  settings = _settings(data_cfg)
  local_batch = _local_batch_size(global_batch_size, process_index, process_count)
  if not 0 <= int(seed) < 2**32:
    raise ValueError(f"seed {seed} must be in [0, 2**32)")
  source = sources.make_source(settings.source, image_key=settings.image_key)
  if len(source) == 0:
    raise ValueError(f"data source {settings.source} is empty; point data.source at images")
  element = _TrainExample(source, settings, int(seed), global_batch_size, local_batch,
                          process_index)
  ds = grain.MapDataset.range(sys.maxsize).map(element).batch(local_batch, drop_remainder=True)
  return _to_iter_dataset(ds, settings)


def train_iterator(data_cfg: DataConfig, *, global_batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """Iterator over `train_dataset` batches, with get_state() / set_state() for checkpoints."""
  return iter(train_dataset(data_cfg, global_batch_size=global_batch_size, seed=seed,
                            process_index=process_index, process_count=process_count))


def eval_dataset(data_cfg: DataConfig, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> grain.IterDataset:
  """This process's finite, ordered evaluation batches (see the module docstring).

  Args:
    data_cfg: data config; `crop` and `flip` are ignored (center crop, no flip);
      `max_examples` limits the number of examples; `repeats` > 1 yields each image that many
      times in a row (with distinct 'index', so tasks that draw per-example random problems,
      like copy-paste, evaluate several problems per image).
    batch_size: global batch size B, divisible by process_count.
    process_index, process_count: this process and the number of processes (P).

  Returns:
    A grain IterDataset of ceil(N / B) batches {'image': uint8 [B/P, h, w, 3],
    'index': int32 [B/P], 'valid': bool [B/P]}.
  """
  settings = _settings(data_cfg)
  local_batch = _local_batch_size(batch_size, process_index, process_count)
  source = sources.make_source(settings.source, image_key=settings.image_key)
  num_examples = len(source) * settings.repeats
  if settings.max_examples is not None:
    num_examples = min(num_examples, settings.max_examples)
  if num_examples < process_count:
    raise ValueError(f"evaluation data {settings.source} has {num_examples} examples, fewer than "
                     f"the {process_count} processes; use more examples or fewer processes")
  num_batches = -(-num_examples // batch_size)
  element = _EvalExample(source, settings, num_examples, batch_size, local_batch, process_index)
  ds = grain.MapDataset.range(num_batches * local_batch).map(element).batch(local_batch)
  return _to_iter_dataset(ds, settings)


def eval_batches(data_cfg: DataConfig, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[Batch]:
  """Yield the `eval_dataset` batches once; worker processes are closed at the end."""
  iterator = iter(eval_dataset(data_cfg, batch_size=batch_size, process_index=process_index,
                               process_count=process_count))
  try:
    yield from iterator
  finally:
    close = getattr(iterator, "close", None)
    if close is not None:
      close()
