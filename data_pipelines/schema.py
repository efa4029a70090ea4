"""The batch schema: the fields of the batches the pipelines give the tasks.

Every batch is a dict of arrays whose leading axis is the batch (B/P examples per process,
the global B on device). Which fields it holds follows from the data source and the pipeline
settings alone (`field_names`), before any item is read:

  image          uint8 [B, h, w, 3]   every source (frame 0 of a clip)
  index          int32 [B]            the example's position in the global stream (training:
                                      modulo 2**31) or in the evaluation set: the seed of its
                                      per-example randomness
  skipped        int32 [B]            training: undecodable items passed over (the trainer
                                      counts and removes it before the step)
  valid          bool [B]             evaluation: False on the padding of the last batch
  source fields  `sources.source_fields`, by kind: 'image' uint8 [B, h, w, 3], 'mask' uint8
                 [B, h, w, 1] in 0..255, 'label' uint8 [B, h, w] (255 = ignore). E.g. 'real'
                 and 'mask' (iharmony4), 'label' (voc, cityscapes, ade20k), 'frame_1'..
                 (video_clips), 'hole_0'.. (davis)
  source scalars int32 [B]            `sources.source_scalars`, e.g. 'subset' (iharmony4)
  object_mask    uint8 [B, h, w, 1]   with data.mask_source (`mask_folder.FIELD`)
  <field>_full, full_extent           evaluation mode 'full': each source field at its own
                 resolution padded to eval.full_size, and int32 [B, 2] its (h, w)

Tasks read 'image' and 'index' from every batch; a task that needs more declares it
(`Task.batch_needs`) and the trainer checks the configured sources before training (`require`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

IMAGE = "image"
INDEX = "index"
SKIPPED = "skipped"
VALID = "valid"
FULL_EXTENT = "full_extent"


def full(field: str) -> str:
  """The name of a source field at full resolution (evaluation mode 'full')."""
  return f"{field}_full"


def field_names(source_fields: Iterable[str], source_scalars: Iterable[str], *, train: bool,
                object_mask: str | None = None, full_resolution: bool = False
                ) -> frozenset[str]:
  """The fields of a batch (module docstring).

  Args:
    source_fields, source_scalars: what the source declares (`sources.source_fields` keys,
      `sources.source_scalars`).
    train: a training batch (with 'skipped') or an evaluation batch (with 'valid').
    object_mask: the field of the drawn object masks, or None without data.mask_source.
    full_resolution: evaluation mode 'full'.
  """
  source_fields = tuple(source_fields)
  names = {*source_fields, *source_scalars, INDEX, SKIPPED if train else VALID}
  if object_mask:
    names.add(object_mask)
  if full_resolution:
    names.update(full(k) for k in source_fields)
    names.add(FULL_EXTENT)
  return frozenset(names)


def require(have: Iterable[str], needs: Mapping[str, str], *, task: str, setting: str) -> None:
  """Checks that batches with fields `have` hold what a task needs.

  Args:
    have: the batch's fields (`field_names`).
    needs: field -> the sources that give it (`Task.batch_needs`).
    task: the task's name, for the message.
    setting: the flag that names the source, e.g. '--config.data.source=voc:/data:train'.

  Raises:
    ValueError: one line naming the missing fields, what the source gives and what to use.
  """
  have = set(have)
  missing = [k for k in needs if k not in have]
  if missing:
    raise ValueError(
        f"{setting} gives batches of {', '.join(sorted(have))}, but the {task} task also reads "
        + "; ".join(f"{k!r} ({needs[k]})" for k in missing))
