r"""A held-out check of a video-inpainting run on a static camera: photos it never trained on,
each repeated as every frame of a clip, under a real object silhouette moving as the hole.

  python -m experiments.video_heldout --workdir=/tmp/video_demo [--step=N] [--per_photo=8]
      [--seed=0] [--out=rows.json]

Photos: none of `samples:train` (the demo's training photos): scikit-image's chelsea and coffee
(`samples:eval`) and camera (grey, as RGB), matplotlib's bundled grace_hopper.jpg. Each is
resized as the run's data are (shorter side to `data.resize`) and cut to `data.image_size` at
a seeded random position, per problem.

Clips: `sequence.num_frames` copies of that crop (no camera motion, so the identity is the right
alignment and every hole pixel that some other frame sees can be copied exactly). Holes: the
silhouettes of `experiments.harmonization_heldout` (horse, cameraman, two coins), scaled to
30-70 % of the side and placed at random (`harmonization_heldout.place`) as frame 0's hole,
moving along the run's own object paths (`sequence.object`, the task's `_holes`).

Scores, on the target frame (`sequence.target`) only and over its hole pixels only: hole PSNR
(dB, pixel values in [0, 1]) and hole L1, of the run's completion (`task.forward`, 'comp'),
of the previous frame copied where it is not itself a hole, nearest fill elsewhere (the task's
'prev_frame' baseline with identity motions), and of the mean colour of the visible pixels
(its 'mean_fill'). Means per photo and over all problems are printed as JSON rows, then as a
markdown table; `--out` also writes the rows as JSON.

Regions: where the error lies, as PSNR of the squared error pooled over all problems, on three
kinds of target pixels: 'visible' (not in the hole: the network's raw output, clipped to
[0, 1], where it only has to reproduce its input), 'hole_seen' (hole pixels that some reference
sees, as the network's own visibility map `c_mask` marks them) and 'hole_unseen' (the rest of
the hole); the model's and the previous frame's (on visible pixels the previous frame is the
input itself). Printed as one more JSON line {'step', 'regions'}, and under 'regions' in `--out`.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import numpy as np
from absl import app, flags

PHOTOS = ("chelsea", "coffee", "camera", "grace_hopper")
METHODS = {"model": "result", "prev_frame": "previous frame", "mean_fill": "mean fill"}
SCORES = ("hole_psnr", "hole_l1")


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, as the tools do: importing
  this module must not take flag names that other commands define in the same process)."""
  flags.DEFINE_string("workdir", None, "The video-inpainting run to check.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("per_photo", 8, "Problems (crop, silhouette, path) per photo.")
  flags.DEFINE_integer("seed", 0, "Seed of the crops, silhouettes, placements and paths.")
  flags.DEFINE_string("out", None, "Also write the rows to this JSON file.")
  flags.mark_flag_as_required("workdir")


def photos() -> dict[str, np.ndarray]:
  """{name: uint8 RGB photo} for `PHOTOS`, none of them in samples:train."""
  from skimage import data  # pylint: disable=g-import-not-at-top

  from data_pipelines import sources  # pylint: disable=g-import-not-at-top
  out = {n: getattr(data, n)() for n in PHOTOS[:3]}
  out["camera"] = np.repeat(out["camera"][..., None], 3, axis=-1)
  out["grace_hopper"] = sources.sample_image("matplotlib/grace_hopper")
  return out


def crop(photo: np.ndarray, resize: int, size: int, rng: np.random.Generator) -> np.ndarray:
  """[size, size, 3] float32 in [0, 1]: the photo, shorter side resized to `resize`, cut at a
  random position."""
  from data_pipelines import image_ops  # pylint: disable=g-import-not-at-top
  h, w = image_ops.resized_shape(*photo.shape[:2], resize)
  image = image_ops.resize(photo, (h, w))
  top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
  return image_ops.crop(image, top, left, size).astype(np.float32) / 255.0


def static_clip(frame: np.ndarray, holes: np.ndarray) -> dict[str, np.ndarray]:
  """A one-example batch of the task's problem layout (`problems`): the frame [H, W, 3] as
  every one of the T frames of holes [T, H, W, 1], identity motions, mean-filled inputs."""
  from cpjax.tasks import video_inpainting  # pylint: disable=g-import-not-at-top
  t = holes.shape[0]
  frames = np.broadcast_to(frame, (1, t, *frame.shape)).astype(np.float32)
  holes = holes[None].astype(np.float32)
  motions = np.broadcast_to(np.eye(2, 3, dtype=np.float32), (1, t, 2, 3))
  inputs = np.asarray(video_inpainting.fill_holes_with_mean(frames, holes))
  return {"frames": frames, "holes": holes, "motions": np.array(motions), "inputs": inputs}


def problems(task: Any, per_photo: int, seed: int) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
  """(photo name, `static_clip`) for `per_photo` seeded problems per photo whose target frame
  has a hole (a silhouette that moved out of the target is skipped).

  Raises:
    ValueError: the run's data.image_size is not square.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import harmonization_heldout  # pylint: disable=g-import-not-at-top
  h, w = task.size
  if h != w:
    raise ValueError(f"the run's data.image_size is {h}x{w}; this check places silhouettes in "
                     "square frames: check a run with a square data.image_size")
  rng = np.random.default_rng(seed)
  keys = iter(jax.random.split(jax.random.key(seed), len(PHOTOS) * per_photo))
  shapes = harmonization_heldout.silhouettes()
  holes_of = jax.jit(task._holes)  # pylint: disable=protected-access  (the run's object paths)
  for name, photo in photos().items():
    for _ in range(per_photo):
      frame = crop(photo, task.config.data.resize, h, rng)
      shape = harmonization_heldout.place(shapes[rng.integers(len(shapes))], h, rng)
      holes = np.asarray(holes_of(next(keys), shape))
      if holes[task.target].any():
        yield name, static_clip(frame, holes)


def psnr_of_mse(mse: float) -> float:
  """PSNR (dB) of a mean squared error of [0, 1] pixel values, capped at 100 dB (mse 1e-10),
  as `cpjax.metrics.psnr` caps it."""
  return float(10.0 * np.log10(1.0 / max(mse, 1e-10)))


def hole_scores(pred: np.ndarray, ex: dict[str, np.ndarray], target: int) -> dict[str, float]:
  """Hole PSNR (dB) and hole L1 of a target completion [1, H, W, 3] over the target's hole."""
  gt, hole = ex["frames"][:, target], ex["holes"][:, target]
  count = 3.0 * hole.sum()
  mse = float(np.sum((pred - gt) ** 2 * hole) / count)
  return {"hole_psnr": psnr_of_mse(mse),
          "hole_l1": float(np.sum(np.abs(pred - gt) * hole) / count)}


REGIONS = ("visible", "hole_seen", "hole_unseen")


def region_sums(outputs: dict[str, np.ndarray], ex: dict[str, np.ndarray], target: int,
                c_mask: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
  """Summed squared error and pixel-channel count per method and region of one problem.

  Args:
    outputs: {'model': the network's raw prediction, 'prev_frame': the baseline} [1, H, W, 3].
    ex: `static_clip`'s problem.
    target: the target frame's index.
    c_mask: [1, h, w, 1] the network's `c_mask` (1 = no reference sees the pixel).

  Returns:
    {method: {region: [sum of squared error, count]}}; the previous frame has no 'visible'.
  """
  from cpjax.models.video_cpn import resize_bilinear  # pylint: disable=g-import-not-at-top
  gt, hole = ex["frames"][:, target], ex["holes"][:, target]
  unseen = (np.asarray(resize_bilinear(c_mask, gt.shape[1:3])) > 0.5).astype(np.float32)
  masks_of = {"visible": 1.0 - hole, "hole_seen": hole * (1.0 - unseen),
              "hole_unseen": hole * unseen}
  sums = {}
  for method, pred in outputs.items():
    err = (np.clip(pred, 0.0, 1.0) - gt) ** 2
    sums[method] = {r: np.array([np.sum(err * m), 3.0 * np.sum(m)])
                    for r, m in masks_of.items() if method == "model" or r != "visible"}
  return sums


def region_psnr(per_problem: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, Any]:
  """Pooled PSNR (dB) per method and region of `region_sums` rows, and the seen fraction of the
  hole pixels ('seen_fraction'); a region with no pixel is left out."""
  out: dict[str, Any] = {}
  for method in per_problem[0]:
    totals = {r: sum(p[method][r] for p in per_problem) for r in per_problem[0][method]}
    out[method] = {r: round(psnr_of_mse(t[0] / t[1]), 2) for r, t in totals.items() if t[1] > 0}
  seen, unseen = (sum(p["model"][r][1] for p in per_problem) for r in REGIONS[1:])
  out["seen_fraction"] = round(float(seen / max(seen + unseen, 1.0)), 3)
  return out


def rows(per_problem: list[tuple[str, dict[str, dict[str, float]]]]) -> list[dict]:
  """Mean scores of every method per photo (in order of appearance), then over all problems.

  Args:
    per_problem: (photo, {method: {score: value}}) each.

  Returns:
    Rows {'photos', 'n', method: {score: mean}} for each method of `METHODS`.
  """
  groups: dict[str, list[dict]] = {}
  for name, scored in per_problem:
    groups.setdefault(name, []).append(scored)
  groups["all"] = [scored for _, scored in per_problem]
  return [{"photos": name, "n": len(cells),
           **{m: {k: round(float(np.mean([c[m][k] for c in cells])), 3) for k in SCORES}
              for m in METHODS}}
          for name, cells in groups.items()]


def markdown(table: list[dict]) -> str:
  """The rows as a markdown table of hole PSNR (hole L1) per method."""
  lines = ["| photos | n | " + " | ".join(METHODS.values()) + " |",
           "|---|---|" + "---|" * len(METHODS)]
  for row in table:
    cells = [f"{row[m]['hole_psnr']:.2f} dB ({row[m]['hole_l1']:.3f})" for m in METHODS]
    lines.append(f"| {row['photos']} | {row['n']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from cpjax.tools import common  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  loaded = common.load_system(f.workdir, f.step, "video_inpainting")
  task = loaded.task
  forward = jax.jit(task.forward)
  baselines = jax.jit(task._baselines)  # pylint: disable=protected-access
  per_problem, per_region = [], []
  for name, ex in problems(task, f.per_photo, f.seed):
    out = forward(loaded.state.params, ex)
    preds = {"model": out["comp"], **baselines(ex)}
    per_problem.append((name, {m: hole_scores(np.asarray(preds[m]), ex, task.target)
                               for m in METHODS}))
    per_region.append(region_sums(
        {"model": np.asarray(out["pred"]), "prev_frame": np.asarray(preds["prev_frame"])},
        ex, task.target, np.asarray(out["c_mask"])))
  table, regions = rows(per_problem), region_psnr(per_region)
  for row in table:
    print(json.dumps({"step": int(loaded.step), **row}))
  print(json.dumps({"step": int(loaded.step), "regions": regions}))
  print(markdown(table))
  if f.out:
    with open(f.out, "w", encoding="utf-8") as out:
      json.dump({"step": int(loaded.step), "rows": table, "regions": regions}, out, indent=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
