r"""A held-out check of a harmonisation run, as a user would try it: photos and object shapes it
never trained on, and colour shifts of several strengths, mild ones included.

  python -m experiments.harmonization_heldout --workdir=/tmp/harm_demo [--step=N] [--per_cell=8]
      [--problems=heldout|demo]

`--problems=demo` scores the run's own kind of problem instead, per strength: its
`config.synthetic` problems (T_color or camera-like shifts, rectangles or blobs, photos
recoloured) on its evaluation photos (`config.eval.source`, e.g. chelsea and coffee, resized
whole), at fixed strengths s = 1 (strong), 0.5 (medium), 0.25 (mild) and 0 (none); groups are
the photos. The rest of this docstring describes the default, 'heldout'.

Photos: none of `samples:*` (the demo's training and evaluation photos). 'colour': matplotlib's
bundled grace_hopper.jpg, whole and two half-size crops; 'grey': scikit-image's camera, clock
and moon (grey photos as RGB). Each is resized to the run's model size, as `eval.mode=resize`.

Masks: real object silhouettes, not rectangles or blobs: the horse of `skimage.data.horse`,
the cameraman of `skimage.data.camera` (its largest dark region) and two single coins
of `skimage.data.coins` (Otsu threshold), each cut to its bounding box, scaled to 30-70 % of the
image side, maybe mirrored, and placed at random inside the image.

Shifts: a camera-like change of the foreground (`cpjax.tasks.harmonization.camera_shift`):
per-channel gains (white balance), a gamma (exposure) and a saturation factor, each
exp(+-a U(0.5, 1)) with a = 0.35 (strong), 0.2 (medium), 0.1 (mild) and 0 ('none': the
composite is already right, and the best output is the input itself).

Each (photo, strength) cell holds `per_cell` seeded problems; the composite and the run's
result (`cpjax.tools.harmonize.harmonize`, the tool's path) are scored with
`cpjax.metrics.harmonization_scores` (MSE, fMSE, PSNR on 0-255) against the target, and the
result also against its input ('change': MSE and fMSE of output vs composite; in the 'none'
rows this is how far the run moves a composite that needs nothing). One JSON row per
(strength, photo group) is printed, plus 'all' rows.
"""
from __future__ import annotations

import json
from typing import Iterator

import numpy as np
from absl import app, flags


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, as the tools do: importing
  this module must not take flag names that other commands define in the same process)."""
  flags.DEFINE_string("workdir", None, "The harmonisation run to check.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("per_cell", 8, "Problems per (photo, strength).")
  flags.DEFINE_integer("seed", 0, "Seed of the masks, placements and shifts.")
  flags.DEFINE_enum("problems", "heldout", ["heldout", "demo"],
                    "heldout: other photos, silhouettes, camera-like shifts; demo: the run's own "
                    "synthetic problems on its evaluation photos.")
  flags.mark_flag_as_required("workdir")


# Drawn in this order (the first three as before 'none' was added, same seeds), shown as ORDER.
STRENGTHS = {"mild": 0.1, "medium": 0.2, "strong": 0.35, "none": 0.0}
ORDER = ("strong", "medium", "mild", "none", "all")
DEMO_STRENGTHS = {"strong": 1.0, "medium": 0.5, "mild": 0.25, "none": 0.0}   # s of --problems=demo
SCORES = ("mse", "fmse", "psnr")
CHANGE_SCORES = ("mse", "fmse")


def photos() -> dict[str, list[np.ndarray]]:
  """{'colour': [...], 'grey': [...]} uint8 RGB photos outside the demo's training/eval sets."""
  from skimage import data  # pylint: disable=g-import-not-at-top

  from data_pipelines import sources  # pylint: disable=g-import-not-at-top
  hopper = sources.sample_image("matplotlib/grace_hopper")
  h, w = hopper.shape[:2]
  colour = [hopper, hopper[: h // 2, : w // 2], hopper[h // 2:, w // 2:]]
  grey = [np.repeat(getattr(data, n)()[..., None], 3, axis=-1) for n in ("camera", "clock", "moon")]
  return {"colour": colour, "grey": grey}


def _largest(labels: np.ndarray, k: int) -> list[np.ndarray]:
  """The k largest labelled regions (label > 0) as boolean masks."""
  sizes = np.bincount(labels.ravel())[1:]
  return [labels == 1 + i for i in np.argsort(sizes)[::-1][:k]]


def silhouettes() -> list[np.ndarray]:
  """Boolean object silhouettes cut to their bounding boxes: horse, cameraman, 2 coins."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  from skimage import data, filters  # pylint: disable=g-import-not-at-top
  horse = ~data.horse()
  camera = data.camera()
  man = _largest(ndimage.label(ndimage.binary_opening(camera < 40, iterations=2))[0], 1)[0]
  man = ndimage.binary_fill_holes(man)
  coins = data.coins()
  coin_regions = ndimage.binary_fill_holes(coins > filters.threshold_otsu(coins))
  boxes = [_bounding_box(s) for s in [horse, man] + _largest(ndimage.label(coin_regions)[0], 8)]
  single_coins = [b for b in boxes[2:] if b.mean() > 0.6][:2]   # not touching coins merged
  return boxes[:2] + single_coins


def _bounding_box(mask: np.ndarray) -> np.ndarray:
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  return mask[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]


def place(shape: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """[size, size, 1] float32 in {0, 1}: the silhouette scaled so that its longer side is
  U(0.3, 0.7) x size, mirrored with probability 1/2, at a random position inside."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  scale = rng.uniform(0.3, 0.7) * size / max(shape.shape)
  h, w = (max(2, round(d * scale)) for d in shape.shape)
  small = np.asarray(Image.fromarray(shape.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR))
  small = small >= 128
  if rng.random() < 0.5:
    small = small[:, ::-1]
  top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
  mask = np.zeros((size, size, 1), np.float32)
  mask[top: top + h, left: left + w, 0] = small
  return mask


def shift(image: np.ndarray, a: float, rng: np.random.Generator) -> np.ndarray:
  """A camera-like colour change of [H, W, 3] in [0, 1]: gamma, gains, saturation (docstring)."""
  from cpjax.tasks import harmonization  # pylint: disable=g-import-not-at-top
  def factor(n: int) -> np.ndarray:
    return np.exp(a * rng.uniform(0.5, 1.0, n) * rng.choice([-1.0, 1.0], n))
  gamma, gains, saturation = factor(1), factor(3), factor(1)
  return np.asarray(harmonization.camera_shift(image, gamma, gains, saturation))


def resized(photo: np.ndarray, size: int) -> np.ndarray:
  """[size, size, 3] float32 in [0, 1], an antialiased resize of the whole photo."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.fromarray(photo).resize((size, size), Image.LANCZOS),
                    np.float32) / 255.0


def problems(size: int, per_cell: int, seed: int
             ) -> Iterator[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
  """(strength, group, composite, mask, target) for every held-out problem, seeded."""
  rng = np.random.default_rng(seed)
  shapes, groups = silhouettes(), photos()
  for strength, a in STRENGTHS.items():
    for group, group_photos in groups.items():
      for photo in group_photos:
        target = resized(photo, size)
        for _ in range(per_cell):
          mask = place(shapes[rng.integers(len(shapes))], size, rng)
          composite = target * (1.0 - mask) + shift(target, a, rng) * mask
          yield strength, group, composite, mask, target


def demo_problems(task, eval_source: str, size: int, per_cell: int, seed: int
                  ) -> Iterator[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
  """(strength, photo, composite, mask, target): the run's own synthetic problems (its
  `task.synthetic`, `task.transform`) on the photos of `eval_source`, at `DEMO_STRENGTHS`.

  Each problem is drawn once at s = 1 and scaled to each strength (the composite at s is
  target + s (composite_1 - target), as `synthetic_problem` makes it): every strength has the
  same photos, masks and shift directions.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from cpjax.tasks import harmonization  # pylint: disable=g-import-not-at-top
  from data_pipelines import sources  # pylint: disable=g-import-not-at-top
  if task.synthetic is None:
    raise ValueError("--problems=demo needs a run trained on synthetic problems "
                     "(config.synthetic); use --problems=heldout")
  full = dataclasses.replace(task.synthetic, strength=(1.0, 1.0), strength_start=None,
                             none_fraction=0.0)
  make = jax.jit(lambda key, photo: harmonization.synthetic_problem(
      key, photo, task.transform, full))
  source = sources.make_source(eval_source)
  keys = iter(jax.random.split(jax.random.key(seed), len(source) * per_cell))
  drawn = []
  for i in range(len(source)):
    photo = resized(source[i]["image"], size)
    for _ in range(per_cell):
      made = {k: np.asarray(v) for k, v in make(next(keys), photo).items()}
      drawn.append((source.path(i).rsplit(".", 1)[-1], made))
  for strength, s in DEMO_STRENGTHS.items():
    for name, made in drawn:
      target = made["target"]
      yield strength, name, target + s * (made["composite"] - target), made["mask"], target


def scores(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
  from cpjax import metrics  # pylint: disable=g-import-not-at-top
  out = metrics.harmonization_scores(pred[None], target[None], mask[None])
  return {k: float(out[k][0]) for k in SCORES}


def rows(per_problem: list[tuple[str, str, dict, dict, dict]]) -> list[dict]:
  """Mean scores per (strength, group), per strength over both groups and over everything.

  Args:
    per_problem: (strength, group, composite scores, result scores, change scores) each.

  Returns:
    Rows {'strength', 'photos', 'n', 'composite': {mse, fmse, psnr}, 'model': {...},
    'change': {mse, fmse}}, strengths in `ORDER`, groups in order of appearance, then all.
  """
  cells: dict[tuple[str, str], list[tuple[dict, dict, dict]]] = {}
  for strength, group, *scored in per_problem:
    for key in ((strength, group), (strength, "all"), ("all", "all")):
      cells.setdefault(key, []).append(scored)
  groups = list(dict.fromkeys(g for _, g, *_ in per_problem)) + ["all"]
  out = []
  for (strength, group), triples in sorted(
      cells.items(), key=lambda c: (ORDER.index(c[0][0]), groups.index(c[0][1]))):
    row = {"strength": strength, "photos": group, "n": len(triples)}
    for i, (name, keys) in enumerate((("composite", SCORES), ("model", SCORES),
                                      ("change", CHANGE_SCORES))):
      row[name] = {k: round(float(np.mean([t[i][k] for t in triples])), 2) for k in keys}
    out.append(row)
  return out


def main(argv: list[str]) -> None:
  del argv
  from cpjax.tools import common, harmonize  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  loaded = common.load_system(f.workdir, f.step, "harmonization")
  size = harmonize.model_size(loaded.config)[0]
  if f.problems == "demo":
    made = demo_problems(loaded.task, loaded.config.eval.source, size, f.per_cell, f.seed)
  else:
    made = problems(size, f.per_cell, f.seed)
  per_problem = []
  for strength, group, composite, mask, target in made:
    result = harmonize.harmonize(loaded.task, loaded.state, composite, mask)
    change = scores(result, composite, mask)
    per_problem.append((strength, group, scores(composite, target, mask),
                        scores(result, target, mask), {k: change[k] for k in CHANGE_SCORES}))
  for row in rows(per_problem):
    print(json.dumps({"step": int(loaded.step), **row}))


if __name__ == "__main__":
  define_flags()
  app.run(main)
