"""Host-side input pipelines of the training loop: grain datasets of uint8 image batches.

Data config fields (`default_data_config()` gives a ConfigDict with the defaults; a plain dict
works too and missing fields take the defaults; an unknown field is an error). "Off" values are 0 or '' rather than None, so
that every field can be set from the command line (ml_collections makes no flag for a None field);
None is accepted too:

  source        spec string of the images, see `data_pipelines.sources` ('folder:/path',
                'cityscapes:/root:split', 'tfds:NAME[/CONFIG][:VERSION]:SPLIT[@DATA_DIR]',
                'samples', 'samples:train', 'samples:eval').              default 'samples'
  missing_hint  how to obtain the dataset, said when `source` is unset (the trainer).
                                                                           default ''
  image_size    crop size: int (square) or (h, w).                         default 256
  resize        0 (keep), int (shorter side to this, aspect kept) or (h, w) (exact): applied
                to the whole image before cropping, e.g. (512, 1024) for Cityscapes 1024x2048.
                                                                           default 0
  crop          'random' (uniform offset) or 'center'; evaluation always crops the center.
                                                                           default 'random'
  flip          random horizontal flip with probability 1/2 (training only). default True
  workers       grain worker processes (mp_prefetch); 0 reads in the calling process.
                                                                           default 0
  prefetch      batches prepared ahead (per worker with workers > 0); also the number of reader
                threads; 0 reads synchronously.                            default 2
  image_key     image feature of a TFDS source.                            default 'image'
  augment       training geometry: 'crop' (below), 'random_resized_crop' (torchvision's
                RandomResizedCrop to image_size, then flip) or 'pad' (the whole image: resize,
                flip, then pad bottom/right up to image_size as eval mode 'pad' does; images
                of any size up to image_size train at one shape, e.g. FCN on whole VOC images
                at 500x500 with the labels' padding ignored; a larger item is an error).
                                                                           default 'crop'
  scale, ratio  area-fraction and aspect (w/h) ranges of 'random_resized_crop'.
                                                          default (0.5, 1.0), (3/4, 4/3)
  keep_foreground  '' (off), or the name of a 'mask' field: a random-resized crop whose mask
                sums to <= 1 (on the 0..1 scale: sum of the uint8 mask <= 255) is redrawn
                until one is kept, except that each such crop is kept with probability 0.05:
                saic-vul/image_harmonization's `check_augmented_sample` with
                keep_background_prob=0.05 (its float mask resized bilinearly, as
                resample='linear' does here to 8-bit rounding). Draws come from the example's
                generator, so the result depends on (seed, stream position) only.
                                                                           default ''
  pad_color     RGB 0..255 of the image padding of 'pad' (training and evaluation); masks pad
                with 0 and labels with 255 (ignored). E.g. the network's mean input colour, so
                that the padding reads as the zeros of the network's own padding.
                                                                           default (0, 0, 0)
  resample      'antialias' (PIL: antialiased bicubic images, bilinear masks) or 'linear'
                (OpenCV-style bilinear without antialiasing for images and masks, as the
                iHarmony4 reference resizes); labels are always nearest.   default 'antialias'
  mask_source   '' (off) or a folder of object masks (`data_pipelines.mask_folder`: binary or
                greyscale images, or VOC SegmentationObject palette PNGs): every example gets
                one drawn mask as 'object_mask' uint8 [h, w, 1] in {0, 255}, independent of its
                image (video-inpainting holes).                            default ''
  mask_size     range of the drawn mask's longer side, as a fraction of the crop's shorter
                side (`mask_folder.MaskFolder.draw`).                      default (0.2, 0.5)

Per example with augment='crop': decode (the source) -> `resize` -> if smaller than
`image_size`, upscale (aspect kept) until it covers it (the shorter side of a square crop
becomes the crop size) -> crop -> flip. Images of any size and aspect ratio can be mixed.

Aligned fields. A source may declare more per-pixel fields than 'image' (`sources.source_fields`:
masks uint8 [h, w, 1], label maps uint8 [h, w]) and integer scalars (`sources.source_scalars`);
every field goes through the same geometry (each resized as its kind needs,
`image_ops.resize_field`), and batches hold each field and scalar (int32).

Training stream and sharding (`train_dataset`, `train_iterator`). The global example stream is
a shuffle of the source with `seed`, repeated forever with a new shuffle per epoch
(`grain.MapDataset.range(n).shuffle(seed).repeat()`): stream position g holds source item
order[g]. The global batch of step s is positions [s*B, (s+1)*B); process p of P gets the
contiguous chunk [s*B + p*B/P, s*B + (p+1)*B/P), so concatenating the processes' batches gives
the one-process batch, and each process reads and decodes only its own examples. Random crop
offsets and flips come from `np.random.default_rng([seed, g])`: a function of the seed and the
stream position only, not of the number of processes, workers or threads; so is the
'object_mask' of data.mask_source (`mask_folder.mask_rng(seed, g)`, a stream of its own, so the
crops do not change when it is turned on). Batches hold the fields `data_pipelines.schema`
lists ('index' is the global stream position g modulo 2**31; 'skipped' counts the undecodable
items passed over to produce the example, normally 0); `batch_fields` names them beforehand.

An item that cannot be decoded is replaced by the next item of the source (order[g] + 1, + 2,
... wrapping around) that decodes; `skipped` counts the items passed over and a warning names
each bad path once per process. If no item decodes the pipeline raises. The iterator is a grain
`DatasetIterator`: `get_state()` / `set_state()` save and restore the position (also with
workers > 0), so a restarted run continues the same stream.

Evaluation (`eval_dataset`, `eval_batches`) takes the data config for how items are read and
the trainer's eval.* settings as keyword arguments of the same names: `source` (default
data.source), `num_examples` (0 = all), `repeats`, `mode` and `full_size`. Examples 0 .. N-1
(example j is item j // repeats, so tasks that draw random problems per example evaluate
several per image) in source order (no shuffle), no flip, the same contiguous split of each
global batch over processes; the last global batch is padded with zero images. `mode` is the
geometry:

  'center'  resize -> cover -> center crop (as training's 'crop', without the randomness);
  'resize'  every field resized exactly to image_size (as the iHarmony4 reference evaluates);
  'pad'     resize, then pad bottom/right up to image_size with each field kind's fill (images
            `pad_color`); a larger item is an error;
  'full'    'resize', and beside it every field at its own resolution padded bottom/right to
            `full_size` (int or (h, w); a larger item is an error) as '<field>_full', with
            'full_extent' int32 [2] = its (h, w): metrics at full resolution.

Batches hold 'index' (the example's position, also on padding) and 'valid' (False on
padding) beside the fields (`data_pipelines.schema`). An item that cannot be decoded raises an error
naming the file. With data.mask_source, example j's 'object_mask' is drawn with
`mask_folder.mask_rng(0, j)`: the same at every evaluation.

grain worker processes (workers > 0) need absl flags parsed: run under `absl.app.run`, or call
`absl.flags.FLAGS.mark_as_parsed()` first (tests do).
"""
from __future__ import annotations

import dataclasses
import difflib
import sys
import threading
from typing import Any, Iterator, Mapping, Union

import grain
import ml_collections
import numpy as np
from absl import flags
from absl import logging

from data_pipelines import image_ops
from data_pipelines import mask_folder
from data_pipelines import schema
from data_pipelines import sources

Batch = dict[str, np.ndarray]
DataConfig = Union[ml_collections.ConfigDict, Mapping[str, Any]]

_DEFAULTS = dict(source="samples", missing_hint="", image_size=256, resize=0, crop="random",
                 flip=True, workers=0, prefetch=2, image_key="image", augment="crop",
                 scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), keep_foreground="", pad_color=(0, 0, 0),
                 resample="antialias", mask_source="", mask_size=(0.2, 0.5))
_CROPS = ("random", "center")
_AUGMENTS = ("crop", "random_resized_crop", "pad")
_EVAL_MODES = ("center", "resize", "pad", "full")
_KEEP_PROBABILITY = 0.05   # a random-resized crop without foreground is kept this often


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
  augment: str
  scale: tuple[float, float]
  ratio: tuple[float, float]
  keep_foreground: str | None
  pad_color: tuple[int, int, int]
  resample: str
  mask_source: str
  mask_size: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class _EvalSettings:
  """Checked evaluation settings (the trainer's eval.* fields of the same names)."""
  num_examples: int | None
  repeats: int
  mode: str
  full_size: tuple[int, int] | None


def _settings(cfg: DataConfig) -> _Settings:
  """Read and check a data config; missing fields take their defaults, unknown ones are refused.
  """
  unknown = sorted(set(cfg) - set(_DEFAULTS))
  if unknown:
    hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(
        k, _DEFAULTS, n=1)) else repr(k) for k in unknown]
    raise ValueError(f"unknown data config field {', '.join(hints)}; the fields are "
                     f"{', '.join(_DEFAULTS)}")
  get = lambda key: cfg.get(key, _DEFAULTS[key])  # pylint: disable=unnecessary-lambda-assignment
  crop = get("crop")
  if crop not in _CROPS:
    raise ValueError(f"data.crop is {crop!r}; use 'random' or 'center'")
  resize = get("resize") or None   # 0 / None: keep the decoded size
  if resize is not None:
    image_ops.resized_shape(1, 1, resize)  # checks the form
    if not isinstance(resize, (int, np.integer)):
      resize = image_ops.pair(resize)
  workers, prefetch = int(get("workers")), int(get("prefetch"))
  if workers < 0 or prefetch < 0:
    raise ValueError(f"data.workers ({workers}) and data.prefetch ({prefetch}) must be >= 0")
  augment, resample = get("augment"), get("resample")
  if resample not in image_ops.RESAMPLES:
    raise ValueError(f"data.resample is {resample!r}; use one of {', '.join(image_ops.RESAMPLES)}")
  if augment not in _AUGMENTS:
    raise ValueError(f"data.augment is {augment!r}; use one of {', '.join(_AUGMENTS)}")
  pad_color = tuple(int(v) for v in get("pad_color"))
  if len(pad_color) != 3 or not all(0 <= v <= 255 for v in pad_color):
    raise ValueError(f"data.pad_color is {pad_color}; use an RGB colour (r, g, b) in 0..255")
  scale, ratio = tuple(map(float, get("scale"))), tuple(map(float, get("ratio")))
  if not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
    raise ValueError(f"data.scale is {scale}; use (low, high) with 0 < low <= high <= 1")
  if not (len(ratio) == 2 and 0 < ratio[0] <= ratio[1]):
    raise ValueError(f"data.ratio is {ratio}; use (low, high) with 0 < low <= high")
  return _Settings(source=get("source"), image_size=image_ops.pair(get("image_size")),
                   resize=resize, crop=crop, flip=bool(get("flip")), workers=workers,
                   prefetch=prefetch, image_key=get("image_key"), augment=augment,
                   scale=scale, ratio=ratio, keep_foreground=get("keep_foreground") or None,
                   pad_color=pad_color, resample=resample, mask_source=get("mask_source") or "",
                   mask_size=tuple(get("mask_size")))


def _eval_settings(num_examples: int | None, repeats: int, mode: str,
                   full_size: Any) -> _EvalSettings:
  """Check the evaluation settings; num_examples and full_size 0 / None = off."""
  if num_examples is not None and int(num_examples) < 0:
    raise ValueError(f"eval.num_examples is {num_examples}; use a positive number, or 0 for all")
  if int(repeats) < 1:
    raise ValueError(f"eval.repeats is {repeats}; use 1 or more")
  if mode not in _EVAL_MODES:
    raise ValueError(f"eval.mode is {mode!r}; use one of {', '.join(_EVAL_MODES)}")
  if mode == "full" and not full_size:
    raise ValueError("eval.mode 'full' needs the padded full-resolution canvas: set "
                     "eval.full_size to the largest image's (h, w) or more")
  return _EvalSettings(num_examples=int(num_examples) if num_examples else None,
                       repeats=int(repeats), mode=mode,
                       full_size=image_ops.pair(full_size) if full_size else None)


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


Fields = dict[str, str]   # aligned field -> kind ('image', 'mask', 'label')


def _resize_all(example: dict[str, Any], fields: Fields, shape: tuple[int, int],
                resample: str) -> dict[str, np.ndarray]:
  return {k: image_ops.resize_field(example[k], shape, kind, resample)
          for k, kind in fields.items()}


def _crop_all(example: dict[str, np.ndarray], top: int, left: int, size: tuple[int, int]
              ) -> dict[str, np.ndarray]:
  return {k: image_ops.crop(v, top, left, size) for k, v in example.items()}


def _crop_geometry(example: dict[str, Any], fields: Fields, settings: _Settings,
                   rng: np.random.Generator | None) -> dict[str, np.ndarray]:
  """resize -> cover the crop -> crop (random with rng, else center)."""
  height, width = example["image"].shape[:2]
  shape = image_ops.resized_shape(height, width, settings.resize)
  out = _resize_all(example, fields, shape, settings.resample)
  out = _resize_all(out, fields, image_ops.covering_shape(*shape, settings.image_size),
                    settings.resample)
  (h, w), (height, width) = settings.image_size, out["image"].shape[:2]
  if rng is not None and settings.crop == "random":
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
  else:
    top, left = (height - h) // 2, (width - w) // 2
  return _crop_all(out, top, left, (h, w))


def _foreground_pixels(mask: np.ndarray) -> float:
  """The foreground area of a uint8 mask in pixels, soft edges counting fractionally:
  sum(mask) / 255 (the reference's sum of its [0, 1] mask)."""
  return float(np.sum(mask, dtype=np.int64)) / 255.0


def _random_resized_crop(example: dict[str, Any], fields: Fields, settings: _Settings,
                         rng: np.random.Generator) -> dict[str, np.ndarray]:
  """RandomResizedCrop of every field to image_size; with keep_foreground, redrawn until the
  crop's mask sums to more than one pixel or a coin with probability 0.05 keeps it anyway (no
  limit on the draws, as the reference: they end with probability 1, after 20 on average
  when no crop can keep the foreground)."""
  resized = _resize_all(example, fields, image_ops.resized_shape(
      *example["image"].shape[:2], settings.resize), settings.resample)
  height, width = resized["image"].shape[:2]
  while True:
    top, left, h, w = image_ops.random_resized_crop_box(height, width, settings.scale,
                                                       settings.ratio, rng)
    out = _resize_all(_crop_all(resized, top, left, (h, w)), fields, settings.image_size,
                      settings.resample)
    if (settings.keep_foreground is None
        or _foreground_pixels(out[settings.keep_foreground]) > 1
        or rng.random() < _KEEP_PROBABILITY):
      return out


def _pad_geometry(example: dict[str, Any], fields: Fields, settings: _Settings, path: str,
                  flip: bool = False, otherwise: str = "use eval.mode='resize'"
                  ) -> dict[str, np.ndarray]:
  """resize -> flip (if `flip`) -> pad bottom/right up to image_size: each field with its kind's
  fill (labels 255), images with pad_color; `otherwise` is the error's alternative fix."""
  out = _resize_all(example, fields, image_ops.resized_shape(
      *example["image"].shape[:2], settings.resize), settings.resample)
  if flip:
    out = {k: image_ops.flip_left_right(v) for k, v in out.items()}
  return {k: image_ops.pad_field(v, settings.image_size, fields[k], path, otherwise=otherwise,
                                 fill=settings.pad_color if fields[k] == "image" else None)
          for k, v in out.items()}


def _prepare_train(example: dict[str, Any], fields: Fields, settings: _Settings,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
  """The random geometry of one training example, the same for all its aligned fields:
  'crop' or 'random_resized_crop', then a flip with probability 1/2; or 'pad', which flips
  before padding (the padding stays bottom/right)."""
  if settings.augment == "pad":
    out = _pad_geometry(example, fields, settings, str(example.get("path", "<item>")),
                        flip=settings.flip and rng.random() < 0.5,
                        otherwise="shrink the images with data.resize")
    return {k: np.ascontiguousarray(v) for k, v in out.items()}
  if settings.augment == "random_resized_crop":
    out = _random_resized_crop(example, fields, settings, rng)
  else:
    out = _crop_geometry(example, fields, settings, rng)
  if settings.flip and rng.random() < 0.5:
    out = {k: image_ops.flip_left_right(v) for k, v in out.items()}
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _prepare_eval(example: dict[str, Any], fields: Fields, settings: _Settings,
                  evaluation: _EvalSettings) -> dict[str, np.ndarray]:
  """The geometry of one evaluation example (`evaluation.mode`, module docstring)."""
  path = str(example.get("path", "<item>"))
  if evaluation.mode in ("resize", "full"):
    out = _resize_all(example, fields, settings.image_size, settings.resample)
    if evaluation.mode == "full":
      out.update({schema.full(k): image_ops.pad_field(example[k], evaluation.full_size, kind,
                                                      path, setting="eval.full_size")
                  for k, kind in fields.items()})
      out[schema.FULL_EXTENT] = np.asarray(example["image"].shape[:2], np.int32)
  elif evaluation.mode == "pad":
    out = _pad_geometry(example, fields, settings, path)
  else:
    out = _crop_geometry(example, fields, settings, None)
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _check_item(example: dict[str, Any], fields: Fields, path: str) -> None:
  """Every declared field is present and aligned with the image."""
  shape = example["image"].shape[:2]
  for key in fields:
    if key not in example:
      raise ValueError(f"item {path} has no field {key!r} that its source declares")
    if example[key].shape[:2] != shape:
      raise ValueError(f"item {path}: field {key!r} is {example[key].shape[:2]} but the image is "
                       f"{shape}; the fields of an item must be aligned")


def _with_scalars(out: dict[str, np.ndarray], example: dict[str, Any], scalars: tuple[str, ...]
                  ) -> dict[str, np.ndarray]:
  out.update({k: np.int32(example[k]) for k in scalars})
  return out


def _mask_folder(settings: _Settings) -> mask_folder.MaskFolder | None:
  """The scanned data.mask_source, or None when it is off."""
  if not settings.mask_source:
    return None
  return mask_folder.MaskFolder(settings.mask_source, settings.mask_size)


def _with_object_mask(out: dict[str, np.ndarray], masks: mask_folder.MaskFolder | None,
                      seed: int, position: int, size: tuple[int, int]) -> dict[str, np.ndarray]:
  """With data.mask_source: out plus the mask drawn for stream position `position`."""
  if masks is not None:
    out[mask_folder.FIELD] = masks.draw(mask_folder.mask_rng(seed, position), size)
  return out


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
  """Local example j of a process -> {fields..., scalars..., 'index', 'skipped'} (picklable)."""

  def __init__(self, source, settings: _Settings, seed: int, batch_size: int, local_batch: int,
               process_index: int, masks: mask_folder.MaskFolder | None):
    self._source, self._settings, self._seed, self._masks = source, settings, seed, masks
    self._fields, self._scalars = sources.source_fields(source), sources.source_scalars(source)
    keep = settings.keep_foreground
    if keep is not None and self._fields.get(keep) != "mask":
      masks = [k for k, kind in self._fields.items() if kind == "mask"]
      raise ValueError(f"data.keep_foreground is {keep!r} but the source {settings.source} has "
                       f"no mask field of that name (its masks: {masks or 'none'}); set "
                       "data.keep_foreground to one of them or to '' (off)")
    self._batch_size, self._local_batch, self._process_index = (
        batch_size, local_batch, process_index)
    self._n = len(source)
    self._order = grain.MapDataset.range(self._n).shuffle(seed=seed).repeat()

  def __call__(self, local: int) -> dict[str, np.ndarray]:
    position = _global_position(local, self._batch_size, self._local_batch, self._process_index)
    example, skipped = _read_skipping(self._source, int(self._order[position]) % self._n)
    _check_item(example, self._fields, str(example.get("path", position)))
    rng = np.random.default_rng([self._seed, position])
    out = _with_scalars(_prepare_train(example, self._fields, self._settings, rng), example,
                        self._scalars)
    out = _with_object_mask(out, self._masks, self._seed, position, self._settings.image_size)
    return {**out, schema.INDEX: np.int32(position % 2**31), schema.SKIPPED: np.int32(skipped)}


class _EvalExample:
  """Local example j of a process -> {fields..., scalars..., 'index', 'valid'}; fill past the end."""

  def __init__(self, source, settings: _Settings, evaluation: _EvalSettings, num_examples: int,
               batch_size: int, local_batch: int, process_index: int,
               masks: mask_folder.MaskFolder | None):
    self._source, self._settings, self._num_examples = source, settings, num_examples
    self._evaluation = evaluation
    self._masks = masks
    self._fields, self._scalars = sources.source_fields(source), sources.source_scalars(source)
    self._batch_size, self._local_batch, self._process_index = (
        batch_size, local_batch, process_index)

  def __call__(self, local: int) -> dict[str, np.ndarray]:
    position = _global_position(local, self._batch_size, self._local_batch, self._process_index)
    if position >= self._num_examples:
      out = _padding_example(self._fields, self._settings.image_size, self._evaluation)
      out.update({k: np.int32(0) for k in self._scalars})
      out = _with_object_mask(out, self._masks, 0, position, self._settings.image_size)
      return {**out, schema.INDEX: np.int32(position), schema.VALID: np.bool_(False)}
    example = self._source[position // self._evaluation.repeats]  # a DecodeError names the file
    _check_item(example, self._fields, str(example.get("path", position)))
    out = _with_scalars(_prepare_eval(example, self._fields, self._settings, self._evaluation),
                        example, self._scalars)
    out = _with_object_mask(out, self._masks, 0, position, self._settings.image_size)
    return {**out, schema.INDEX: np.int32(position), schema.VALID: np.bool_(True)}


def _padding_field(kind: str, size: tuple[int, int]) -> np.ndarray:
  """The value of a field on an evaluation padding example (never scored)."""
  channels = {"image": (3,), "mask": (1,), "label": ()}[kind]
  return np.zeros((*size, *channels), np.uint8)


def _padding_example(fields: Fields, image_size: tuple[int, int], evaluation: _EvalSettings
                     ) -> dict[str, np.ndarray]:
  """The fields of an evaluation padding example, shaped as `_prepare_eval` shapes real ones."""
  out = {k: _padding_field(kind, image_size) for k, kind in fields.items()}
  if evaluation.mode == "full":
    out.update({schema.full(k): _padding_field(kind, evaluation.full_size)
                for k, kind in fields.items()})
    out[schema.FULL_EXTENT] = np.asarray(evaluation.full_size, np.int32)
  return out


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
                          process_index, _mask_folder(settings))
  ds = grain.MapDataset.range(sys.maxsize).map(element).batch(local_batch, drop_remainder=True)
  return _to_iter_dataset(ds, settings)


def train_iterator(data_cfg: DataConfig, *, global_batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """Iterator over `train_dataset` batches, with get_state() / set_state() for checkpoints."""
  return iter(train_dataset(data_cfg, global_batch_size=global_batch_size, seed=seed,
                            process_index=process_index, process_count=process_count))


def eval_dataset(data_cfg: DataConfig, *, batch_size: int, source: str | None = None,
                 num_examples: int = 0, repeats: int = 1, mode: str = "center",
                 full_size: Any = 0, process_index: int = 0,
                 process_count: int = 1) -> grain.IterDataset:
  """This process's finite, ordered evaluation batches (see the module docstring).

  Args:
    data_cfg: data config: how items are read and resized; `crop`, `flip` and the training
      geometry (`augment`, `scale`, `ratio`, `keep_foreground`) are not used.
    batch_size: global batch size B, divisible by process_count.
    source: the evaluation images (default data_cfg's source).
    num_examples: the first N examples (0 = all: items x repeats).
    repeats: each item yields this many consecutive examples with distinct 'index'.
    mode, full_size: the geometry, 'center', 'resize', 'pad' or 'full' (module docstring).
    process_index, process_count: this process and the number of processes (P).

  Returns:
    A grain IterDataset of ceil(N / B) batches {'image': uint8 [B/P, h, w, 3],
    'index': int32 [B/P], 'valid': bool [B/P]}.
  """
  settings = _settings(data_cfg)
  if source:
    settings = dataclasses.replace(settings, source=source)
  evaluation = _eval_settings(num_examples, repeats, mode, full_size)
  local_batch = _local_batch_size(batch_size, process_index, process_count)
  items = sources.make_source(settings.source, image_key=settings.image_key)
  n = len(items) * evaluation.repeats
  if evaluation.num_examples is not None:
    n = min(n, evaluation.num_examples)
  if n < process_count:
    raise ValueError(f"evaluation data {settings.source} has {n} examples, fewer than "
                     f"the {process_count} processes; use more examples or fewer processes")
  num_batches = -(-n // batch_size)
  element = _EvalExample(items, settings, evaluation, n, batch_size, local_batch, process_index,
                         _mask_folder(settings))
  ds = grain.MapDataset.range(num_batches * local_batch).map(element).batch(local_batch)
  return _to_iter_dataset(ds, settings)


def batch_fields(data_cfg: DataConfig, *, train: bool, source: str | None = None,
                 mode: str = "center") -> frozenset[str]:
  """The fields of the batches of `train_dataset` (train=True; `mode` unused) or of
  `eval_dataset` (with `source` and `mode`), from the source's declaration: no item is read
  (`schema.field_names`)."""
  settings = _settings(data_cfg)
  items = sources.make_source(source or settings.source, image_key=settings.image_key)
  return schema.field_names(sources.source_fields(items), sources.source_scalars(items),
                            train=train,
                            object_mask=mask_folder.FIELD if settings.mask_source else None,
                            full_resolution=not train and mode == "full")


def eval_batches(data_cfg: DataConfig, *, batch_size: int, **kwargs: Any) -> Iterator[Batch]:
  """Yield the `eval_dataset` batches once (same arguments); worker processes are closed at the
  end."""
  iterator = iter(eval_dataset(data_cfg, batch_size=batch_size, **kwargs))
  try:
    yield from iterator
  finally:
    close_iterator(iterator)


def close_iterator(iterator: Iterator[Batch]) -> None:
  """Stops an iterator's reader threads and worker processes now, not when it is collected
  (grain iterators have close(); others need nothing)."""
  close = getattr(iterator, "close", None)
  if close is not None:
    close()
