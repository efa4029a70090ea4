"""Smart copy-paste on 512x512 aligned faces (paper section 3.3). Variants: '' (paper), 'tiny'.

Data: an image folder of aligned faces (CelebA-HQ / FFHQ layout: any tree of images) or a TFDS
ArrayRecord dataset, e.g.
  --config.data.source=folder:/data/celeba_hq  --config.eval.source=folder:/data/celeba_hq_val
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults
from data_pipelines import pipeline

NO_DATA = ("configs/faces.py needs face images: pass --config.data.source=folder:/path/to/faces "
           "(and --config.eval.source=folder:/path/to/held_out_faces), or a TFDS ArrayRecord "
           "dataset as tfds:NAME:SPLIT. To try the system without any dataset, run "
           "configs/demo.py, which trains on photos bundled with scikit-image.")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = defaults.trainer_config()
  c.task = "copy_paste"
  c.total_steps = 250_000                # paper: 250k iterations
  c.batch_size = 5                       # paper: batch size 5 (global)
  c.data = pipeline.default_data_config()
  c.data.source = ""
  c.data.missing_hint = NO_DATA
  c.data.image_size = 512                # paper: 512 x 512
  c.transform = dict(
      sigma=15.0,                        # T_geometric corner offsets U(-sigma, sigma) px (faces)
      color=dict(saturation=(0.5, 1.5),  # k1, HSV S scale
                 hue=(-0.5, 0.5),        # Delta1, H shift (wraps)
                 contrast=(0.5, 1.5),    # lambda_i, per channel
                 brightness=(-0.5, 0.5)),  # Delta2
      mix_grid=10,                       # M_mix: 10 x 10 salt-and-pepper, bilinear upsampling
      shading="local",                   # 'local' = T_shading (eq. 3); 'global' = one T_color
  )
  c.model = dict(
      generator_widths=(64, 128, 256, 512),   # stem, then 3 stride-2 levels: 512 px -> 64 px x 512
      dilations=(2, 2, 4, 4, 8, 8, 16),       # 7 dilated 3x3 convs, rates rising to 16
      noise="layers",                         # noise addition after each transposed conv
      critic_global_widths=(64, 128, 256, 512, 512, 512),
      critic_local_widths=(64, 128, 256, 512, 512),
      critic_local_size=256,
      critic_dense=1024,
      dtype="float32",
  )
  c.loss = dict(alpha=1e-4, gamma=1e-3, gp_lambda=10.0)   # eq. 7 and eq. 5
  c.optim = dict(lr=2e-4, b1=0.0, b2=0.9, critic_steps=1,  # Adam, G and D
                 decay=0.1, milestones=(),                 # no milestones: constant lr
                 ema_decay=0.0)                            # no weight average (the paper)
  c.curriculum = dict(low_res_steps=0,   # the paper: none; first steps at 1 / low_res_factor
                      low_res_factor=2,  # of data.image_size (cpjax.tasks.copy_paste)
                      reconstruction_steps=0)  # the paper: none; first steps L1 only
  c.checkpoint.every_steps = 5000
  c.sample_every_steps = 2000
  c.eval.num_examples = 200
  c.eval.batch_size = 5
  c.eval.every_steps = 25_000
  if arg == "tiny":
    shrink_for_tests(c, image_size=32, source="samples:train")
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/faces.py; use '' or 'tiny'.")
  return c


def shrink_for_tests(c: ml_collections.ConfigDict, *, image_size: int, source: str) -> None:
  """The same code path with a tiny network, a few steps and the bundled photos (CPU seconds)."""
  c.total_steps, c.batch_size = 4, 8
  c.data.source, c.data.image_size, c.data.resize = source, image_size, 0
  c.data.workers = 0
  c.transform.sigma = c.transform.sigma * image_size / 512
  c.model.generator_widths = (8, 16, 16, 16)
  c.model.dilations = (2, 4)
  c.model.critic_global_widths = (8, 16, 16)
  c.model.critic_local_widths = (8, 16)
  c.model.critic_local_size = image_size // 2
  c.model.critic_dense = 16
  c.log_every_steps = 2
  c.sample_every_steps = 0
  c.checkpoint.every_steps = 2
  c.eval.source = "samples:eval"
  c.eval.num_examples, c.eval.repeats, c.eval.batch_size = 8, 4, 8
