"""Copy-and-Paste Networks for video inpainting (Lee et al. 2019) as a task of the shared loop.

Training data (paper sec. 4.2), synthesised on device from still images, per example from its
own key (`example_keys`):
  * background: T frames X_t = warp(I, A_t o Z) of the host crop I, with Z a zoom about the
    centre (`sequence.zoom`, so that motion reveals little outside the crop; what it reveals is
    mirrored) and A_t a path of successive random affine motions (rotation, shear, scale,
    translation: `sequence.camera`), or A_t = I for a fraction `sequence.static_fraction` of
    the sequences (a static camera);
  * holes: an object shape moving along its own random affine path (`sequence.object`): with
    `data.mask_source` (a folder of object masks, e.g. VOC SegmentationObject) the batch's
    'object_mask', drawn and placed on the host (`data_pipelines.mask_folder`), is the hole of
    frame 0 exactly (`cpjax.ops.masks.moving_shape_masks`); without it, a random blob
    (`moving_blob_masks`);
  * the target is frame `sequence.target` (default the middle one, so references lie on both
    sides as at inference); the others are its references. Holes are filled with the ImageNet
    mean colour, as the reference's inference does.
Real frame sequences (optional): with a `video_clips:ROOT[:T[:STEP]]` source
(`data_pipelines.video_clips`, e.g. DAVIS JPEGImages folders) every example is a clip of T
consecutive frames, cropped and flipped alike on the host; the frames are used as they are (no
synthetic camera motion on top of the real one) and the holes move as above. Their true motion
is unknown: 'motions' are the whole-pixel translations from the target frame to each frame that
phase correlation of the complete frames finds (`geometry.phase_correlation_shift`), used only
by the 'prev_frame' baseline below. A `davis:ROOT[:IMSET]` source (`data_pipelines.davis`, the
paper's DAVIS evaluation) gives each clip its holes as well: another video's object masks,
dilated here `sequence.dilate` times with the 3x3 cross (`dilate_cross`) at the evaluated size.

Losses (sec. 4.1; weights in `loss.*`, the paper gives none, see configs/video_inpainting.py):
  L = w_align L_align + w_valid L_valid + w_hv L_hole_visible + w_hi L_hole_invisible
      + w_prc L_perceptual + w_style L_style + w_tv L_tv
  * L_align: for every reference, mean |X_t - X_{r->t}| over the pixels visible in both (the
    aligned reference's visibility warped with it), averaged over references;
  * L_valid / L_hole_*: `losses.masked_l1` of the decoder output Y against the ground truth on
    the non-hole pixels / the hole pixels some reference sees (1 - C) / the hole pixels no
    reference sees (C = the context-matching c_mask, upsampled bilinearly, no gradient);
  * L_perceptual, L_style on VGG16 pooling features (`loss.vgg_layers`) of the composite
    Y_comp = Y hole + X (1 - hole) and of the ground truth; L_tv = total variation of Y_comp.
    The VGG16 (ImageNet weights, `loss.vgg_weights`: a directory of `python -m
    cpjax.tools.convert --model=vgg16_torchvision`, the one format read) is frozen and lives in
    the train state; it is built only when a perceptual or style weight is non-zero and
    `loss.vgg_weights` is set. Only training needs it: without it the state holds no VGG,
    inference and evaluation run (e.g. converted released weights, whose config keeps the
    paper's loss weights), and `train_step` stops with a message naming the setting.

Optimiser: Adam, learning rate x0.1 every `optim.decay_steps` (paper: 1M iterations); the
alignment network's at `optim.align_lr_mult` x that (paper: 1, joint training at one rate).
With `optim.warmup_steps` = N > 0 (ours; the paper has none) the rate of step s is also scaled
by min(1, (s + 1) / N), a linear warm-up; the decay steps still count from step 0. The network
has no normalisation: at full rate from the first step, Adam's first updates (each about lr
per weight, whatever the gradient's scale) can leave whole ReLU layers dead.

Evaluation: fixed seeded sequences from held-out images or clips (the same at every checkpoint);
PSNR and SSIM of the completed target frame against the original (averaged over the examples
whose target has a hole: 'scored_examples'), beside two baselines on the same problems
(`baseline_step`: they do not depend on the network, so the trainer computes them once per
evaluation set and reports them with every evaluation): 'mean_fill' (holes filled with the mean
colour of the frame's visible pixels) and 'prev_frame' (the previous frame aligned to the target
with the TRUE synthetic motion; hole pixels it sees are copied, the rest take the nearest visible
value, `fill_nearest`; on real clips the previous frame shifted by the translation phase
correlation finds between the two complete frames: an oracle estimate, as the true motion is for
synthetic sequences).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cpjax import losses, metrics
from cpjax.convert import checkpoint as converted_weights
from cpjax.convert import vgg as convert_vgg
from cpjax.convert import video_cpn as convert_cpn
from cpjax.models.vgg import VGG16
from cpjax.models.video_cpn import CPNet, resize_bilinear
from cpjax.ops import geometry, masks
from cpjax.ops.color import IMAGENET_MEAN, imagenet_normalize
from cpjax.tasks.base import Batch, Metrics, Task, TrainState, example_keys, with_warmup
from data_pipelines import image_ops, mask_folder, video_clips


# What loss.vgg_weights takes: converted torchvision VGG16 (ImageNet-normalised RGB input).
_VGG = "vgg16_torchvision"
_VGG_FILE = convert_vgg.FILES[_VGG]
# fold_in tag of the static-camera draw of `_sequence`.
_STATIC = 1


class VideoState(TrainState):
  """The network's train state and the frozen VGG16 parameters of the perceptual and style
  losses ({} without them)."""
  vgg: Any


def build_model(config: ml_collections.ConfigDict) -> CPNet:
  """The `CPNet` of a config's `model` fields."""
  m = config.model
  return CPNet(align_widths=tuple(m.align_widths), align_size=m.align_size,
                      regressor_width=m.regressor_width, reuse_conv5=m.reuse_conv5,
                      encoder_widths=tuple(m.encoder_widths),
                      decoder_widths=tuple(m.decoder_widths), dilations=tuple(m.dilations),
                      dtype=jnp.dtype(m.dtype))


def align_feature_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(s/8, s/8, C) of the alignment features."""
  side = config.model.align_size // 8
  return side, side, config.model.align_widths[-1]


def fill_holes_with_mean(frames: jax.Array, holes: jax.Array) -> jax.Array:
  """Frames with the holes painted the ImageNet mean colour (the reference's input)."""
  return frames * (1.0 - holes) + holes * jnp.asarray(IMAGENET_MEAN, frames.dtype)


def dilate_cross(holes: jax.Array, iterations: int) -> jax.Array:
  """Binary dilation of [..., H, W, 1] holes in {0, 1} with the 3x3 cross, `iterations` times:
  cv2.dilate(holes, getStructuringElement(MORPH_CROSS, (3, 3)), iterations=iterations), as the
  released test code dilates its masks. Returns an array of the input's shape and dtype."""
  for _ in range(iterations):
    pad = [(0, 0)] * (holes.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
    p = jnp.pad(holes, pad)
    holes = jnp.maximum(jnp.maximum(jnp.maximum(p[..., :-2, 1:-1, :], p[..., 2:, 1:-1, :]),
                                    jnp.maximum(p[..., 1:-1, :-2, :], p[..., 1:-1, 2:, :])),
                        holes)
  return holes


def _holed(hole: jax.Array) -> jax.Array:
  """[B]: 1.0 where a [B, H, W, 1] hole has a pixel, else 0.0."""
  return (jnp.sum(hole, axis=(1, 2, 3)) > 0).astype(jnp.float32)


def fill_nearest(image: jax.Array, valid: jax.Array, iterations: int) -> jax.Array:
  """Fills invalid pixels from the nearest valid ones, growing the valid region 1 px per step.

  Each step, every invalid pixel with valid 8-neighbours takes their mean and becomes valid, so
  a pixel receives the values at chessboard distance d after d steps (ties averaged).

  Args:
    image: [H, W, C]; valid: [H, W, 1] in {0, 1}.
    iterations: number of steps (max(H, W) fills everything reachable).

  Returns:
    [H, W, C]: valid pixels unchanged; pixels further than `iterations` from any valid one (or
    all, if none is valid) keep their input value.
  """
  def box(x):
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, (3, 3, 1), (1, 1, 1), "SAME")

  def step(_, carry):
    values, v = carry
    total, count = box(values * v), box(v)
    grow = (v < 0.5) & (count > 0.5)
    values = jnp.where(grow, total / jnp.maximum(count, 1.0), values)
    return values, jnp.maximum(v, grow.astype(v.dtype))

  return jax.lax.fori_loop(0, iterations, step, (image, valid))[0]


def learning_rate(optim: ml_collections.ConfigDict, mult: float = 1.0) -> optax.Schedule:
  """The rate of step s (module docstring): mult x lr x decay_rate^floor(s / decay_steps),
  with `base.with_warmup`'s linear warm-up over optim.warmup_steps."""
  return with_warmup(optax.exponential_decay(
      optim.lr * mult, transition_steps=optim.decay_steps, decay_rate=optim.decay_rate,
      staircase=True), optim)


def param_groups(params: Any) -> Any:
  """'align' for the alignment network (encoder and regressor: lr x `optim.align_lr_mult`),
  'default' for the copy encoder and the paste decoder."""
  return {name: jax.tree.map(lambda _, n=name: "align" if n.startswith("align_") else "default",
                             sub) for name, sub in params.items()}


class VideoInpaintingTask(Task):
  """Copy-and-Paste Networks trained on synthetic sequences (module docstring)."""

  sample_columns = ("ground_truth", "input", "aligned_reference", "result")
  curves = tuple((title, key, {"previous frame": f"prev_frame_{key}",
                               "mean fill": f"mean_fill_{key}"})
                 for title, key in (("PSNR (dB)", "psnr"), ("SSIM", "ssim"),
                                    ("hole L1", "hole_l1")))

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.net = build_model(config)
    self.size = image_ops.pair(config.data.image_size)
    if self.size[0] % 8 or self.size[1] % 8:
      raise ValueError(f"data.image_size is {config.data.image_size}; video inpainting needs "
                       "multiples of 8 (the network down-samples by 4 and the reference pads to "
                       "8).")
    s = config.sequence
    self.num_frames, self.target = s.num_frames, s.target
    if not 0 <= self.target < self.num_frames or self.num_frames < 2:
      raise ValueError(f"sequence.target={self.target} must index one of sequence.num_frames="
                       f"{self.num_frames} (>= 2) frames")
    self.refs = tuple(i for i in range(self.num_frames) if i != self.target)
    self.object_ranges = masks.MovingMaskRanges(**s.object.to_dict())
    loss = config.loss
    # The frozen VGG16 serves only the training losses: without weights for it the state holds
    # none, and only `train_step` refuses to run (inference and evaluation never need it).
    self.vgg_losses = loss.perceptual > 0 or loss.style > 0
    self.use_vgg = self.vgg_losses and bool(loss.vgg_weights)
    o = config.optim

    def adam(mult: float) -> optax.GradientTransformation:
      return optax.adam(learning_rate(o, mult), b1=o.b1, b2=o.b2)

    # One Adam at 1x is the paper's joint training (and the optimiser state of runs before
    # align_lr_mult existed); any other multiplier gives the alignment network its own Adam.
    self.tx = (adam(1.0) if o.align_lr_mult == 1.0 else optax.multi_transform(
        {"default": adam(1.0), "align": adam(o.align_lr_mult)}, param_groups))

  # ----------------------------------------------------------------------------- state
  def _dummy_inputs(self) -> tuple[jax.Array, ...]:
    h, w = self.size
    t = len(self.refs)
    return (jnp.zeros((1, t, *align_feature_shape(self.config)), jnp.float32),
            jnp.zeros((1, t, h, w, 3)), jnp.zeros((1, t, h, w, 1)), jnp.zeros((1, h, w, 3)),
            jnp.zeros((1, h, w, 1)))

  def init(self, key: jax.Array) -> VideoState:
    """Random network and (with perceptual or style losses and `loss.vgg_weights`) random
    VGG16; `warm_start` loads the pretrained VGG16 on the host, so no weights file is read
    under jit."""
    net_key, vgg_key = jax.random.split(key)
    params = self.net.init(net_key, *self._dummy_inputs())["params"]
    vgg = VGG16().init(vgg_key, jnp.zeros((1, 32, 32, 3)))["params"] if self.use_vgg else {}
    return VideoState.create(apply_fn=self.net.apply, params=params, tx=self.tx, vgg=vgg)

  def warm_start(self, state: VideoState) -> VideoState:
    """Pretrained values for a fresh run: the VGG16 of the perceptual/style losses
    (`loss.vgg_weights`: a converted vgg16_torchvision directory; 'random' keeps the untrained
    VGG, smoke tests only) and, with `init_from` = a directory of `python -m
    cpjax.tools.convert --model=cpn_video`, the released CPN weights (the config's model must be
    the reference one)."""
    spec = self.config.loss.vgg_weights
    if self.use_vgg and spec != "random":
      vgg = convert_vgg.load_params(spec, "imagenet", "loss.vgg_weights")["vgg"]
      state = state.replace(vgg=converted_weights.put(
          {"vgg": state.vgg}, {("vgg",): vgg}, "loss.vgg_weights", spec)["vgg"])
    init_from = self.config.init_from
    if not init_from:
      return state
    released = convert_cpn.load_params(init_from, "init_from", self.config.model)
    params = converted_weights.put({"params": state.params}, {("params",): released},
                                   "init_from", init_from)["params"]
    return state.replace(params=params, opt_state=self.tx.init(params))

  # ----------------------------------------------------------------------------- data
  def _holes(self, key: jax.Array, shape: jax.Array | None) -> jax.Array:
    """[T, H, W, 1] holes: `shape` [H, W, 1] in {0, 1} (frame 0's hole) moving along a random
    object path, or a moving random blob when None."""
    h, w = self.size
    if shape is None:
      return masks.moving_blob_masks(key, self.num_frames, h, w, self.object_ranges)
    return masks.moving_shape_masks(key, shape, self.num_frames, self.object_ranges)

  def _sequence(self, key: jax.Array, image: jax.Array, shape: jax.Array | None = None
                ) -> dict[str, jax.Array]:
    """One synthetic example from a still image [H, W, 3]: frames [T, H, W, 3], holes
    [T, H, W, 1], motions [T, 2, 3].

    With probability `sequence.static_fraction` the camera stands still: every frame is the
    zoomed crop itself (every motion the zoom, so aligning is the identity and the hole's pixels
    are copied from where the references see them); the hole moves on its own path either way.
    The draw uses its own key (folded from the camera's), so static_fraction=0 gives the
    sequences of before."""
    s = self.config.sequence
    h, w = self.size
    k_cam, k_obj = jax.random.split(key)
    zoom = geometry.affine_about_center(h, w, scale=s.zoom)
    path = geometry.random_affine_path(k_cam, self.num_frames, h, w, **s.camera.to_dict())
    static = jax.random.uniform(jax.random.fold_in(k_cam, _STATIC)) < s.static_fraction
    path = jnp.where(static, jnp.eye(2, 3, dtype=path.dtype), path)
    motions = jax.vmap(lambda a: geometry.compose_affine(a, zoom))(path)
    frames = jax.vmap(lambda a: geometry.affine_warp(image, a, fill="reflect"))(motions)
    return {"frames": jnp.clip(frames, 0.0, 1.0), "holes": self._holes(k_obj, shape),
            "motions": motions}

  def _clip_motions(self, frames: jax.Array) -> jax.Array:
    """[T, 2, 3]: the translations from the target to each frame of a real clip [T, H, W, 3]
    that phase correlation finds (the true motion is unknown; module docstring)."""
    shifts = jax.vmap(geometry.phase_correlation_shift, in_axes=(None, 0))(
        frames[self.target], frames)
    motions = jnp.broadcast_to(jnp.eye(2, 3, dtype=jnp.float32), (self.num_frames, 2, 3))
    return motions.at[:, :, 2].set(shifts)

  def _clip(self, key: jax.Array, frames: jax.Array, shape: jax.Array | None = None
            ) -> dict[str, jax.Array]:
    """One example from a real clip [T, H, W, 3]: the frames, moving holes drawn as in
    `_sequence` (the same key split) and `_clip_motions`."""
    _, k_obj = jax.random.split(key)
    return {"frames": frames, "holes": self._holes(k_obj, shape),
            "motions": self._clip_motions(frames)}

  def _clip_with_holes(self, frames: jax.Array, holes: jax.Array) -> dict[str, jax.Array]:
    """One example from a real clip [T, H, W, 3] with its own holes [T, H, W, 1] (a `davis`
    source), dilated `sequence.dilate` times."""
    return {"frames": frames, "holes": dilate_cross(holes, self.config.sequence.dilate),
            "motions": self._clip_motions(frames)}

  def problems(self, batch: Batch, key: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
    """Sequences built on device from the batch's images, or its clips ('image', 'frame_1',
    ... of a `video_clips` source), with the 'object_mask' shapes when the pipeline has a mask
    folder, or the clips' own holes ('hole_0', ... of a `davis` source, value 1 = hole):
    frames (ground truth), holes, inputs (holes filled with the mean colour), motions; all with
    leading [B, T]."""
    length = video_clips.clip_length(batch)
    if length == 1:
      make, pixels = self._sequence, batch["image"]
    elif length == self.num_frames:
      make = self._clip
      pixels = jnp.stack([batch[video_clips.frame_field(k)] for k in range(length)], axis=1)
    else:
      raise ValueError(f"the data source gives clips of {length} frames but "
                       f"sequence.num_frames is {self.num_frames}; make them equal (the T of "
                       f"video_clips:ROOT:T, or --config.sequence.num_frames={length})")
    args = [example_keys(key, step, batch["index"]), pixels.astype(jnp.float32) / 255.0]
    if video_clips.hole_field(0) in batch and length > 1:
      holes = jnp.stack([batch[video_clips.hole_field(k)] == 1 for k in range(length)], axis=1)
      make, args = self._clip_with_holes, [args[1], holes[..., None].astype(jnp.float32)]
    elif mask_folder.FIELD in batch:
      args.append((batch[mask_folder.FIELD] > 127).astype(jnp.float32))
    ex = jax.vmap(make)(*args)
    ex["inputs"] = fill_holes_with_mean(ex["frames"], ex["holes"])
    return ex

  # ----------------------------------------------------------------------------- model
  def forward(self, params: Any, ex: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The network on the target frame with the other frames as references."""
    b, t = ex["inputs"].shape[:2]
    flat = lambda x: x.reshape(b * t, *x.shape[2:])  # pylint: disable=unnecessary-lambda-assignment
    feats = self.net.apply({"params": params}, flat(ex["inputs"]), flat(ex["holes"]),
                           method=CPNet.encode_alignment)
    feats = feats.reshape(b, t, *feats.shape[1:])
    refs = np.asarray(self.refs)
    out = self.net.apply({"params": params}, feats[:, refs], ex["inputs"][:, refs],
                         ex["holes"][:, refs], ex["inputs"][:, self.target],
                         ex["holes"][:, self.target])
    return jax.tree.map(lambda x: x.astype(jnp.float32), out)

  def _vgg_features(self, vgg: Any, images: jax.Array) -> dict[str, jax.Array]:
    return VGG16().apply({"params": vgg}, imagenet_normalize(images))

  def loss_terms(self, params: Any, vgg: Any, ex: dict[str, jax.Array]
                 ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Each loss of the module docstring (unweighted) and the network output."""
    out = self.forward(params, ex)
    gt = ex["frames"][:, self.target]
    hole = ex["holes"][:, self.target]
    target_in = ex["inputs"][:, self.target]
    h, w = self.size
    unseen = jax.lax.stop_gradient(resize_bilinear(out["c_mask"], (h, w)))
    pred = out["pred"]
    joint = (1.0 - hole)[:, None] * out["aligned_visible"]
    align_err = jnp.sum(joint * jnp.abs(target_in[:, None] - out["aligned"]), axis=(2, 3, 4))
    align_count = 3.0 * jnp.sum(joint, axis=(2, 3, 4))
    terms = {
        "align": jnp.mean(align_err / jnp.maximum(align_count, 1.0)),
        "valid": losses.masked_l1(pred, gt, 1.0 - hole),
        "hole_visible": losses.masked_l1(pred, gt, hole * (1.0 - unseen)),
        "hole_invisible": losses.masked_l1(pred, gt, hole * unseen),
    }
    comp = pred * hole + gt * (1.0 - hole)
    terms["tv"] = losses.total_variation(comp)
    if self.use_vgg:
      layers = tuple(self.config.loss.vgg_layers)
      f_comp = self._vgg_features(vgg, comp)
      f_gt = jax.lax.stop_gradient(self._vgg_features(vgg, gt))
      terms["perceptual"] = losses.perceptual_loss(f_comp, f_gt, layers)
      terms["style"] = losses.style_loss(f_comp, f_gt, layers)
    return terms, out

  def train_step(self, state: VideoState, batch: Batch,
                 key: jax.Array) -> tuple[VideoState, Metrics]:
    """One Adam step on the weighted losses (module docstring).

    Raises:
      ValueError: perceptual or style weights without `loss.vgg_weights` (when traced, i.e.
        before the first step runs).
    """
    if self.vgg_losses and not self.use_vgg:
      raise ValueError(
          "the perceptual and style losses need ImageNet VGG16 weights: "
          + converted_weights.convert_advice("loss.vgg_weights", _VGG, _VGG_FILE)
          + ", or turn them off with --config.loss.perceptual=0 --config.loss.style=0")
    ex = self.problems(batch, key, state.step)
    weights = self.config.loss

    def loss_fn(params):
      terms, _ = self.loss_terms(params, state.vgg, ex)
      total = sum(weights[name] * value for name, value in terms.items())
      return total, terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss, **terms}

  # ----------------------------------------------------------------------------- evaluation
  def _baselines(self, ex: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """'mean_fill' and 'prev_frame' completions of the target [B, H, W, 3] (module docstring)."""
    gt = ex["frames"][:, self.target]
    hole = ex["holes"][:, self.target]
    visible = 1.0 - hole
    mean = jnp.sum(gt * visible, axis=(1, 2), keepdims=True) / jnp.maximum(
        jnp.sum(visible, axis=(1, 2), keepdims=True), 1.0)
    mean_fill = gt * visible + mean * hole
    prev = self.target - 1 if self.target > 0 else self.target + 1

    def prev_frame(frames, holes, motions, gt, hole):
      to_target = geometry.compose_affine(motions[self.target],
                                          geometry.invert_affine(motions[prev]))
      aligned = geometry.affine_warp(frames[prev], to_target, fill="constant")
      seen = geometry.affine_warp(jnp.ones_like(holes[prev]), to_target, fill="constant")
      seen = ((seen > 0.5) & (geometry.affine_warp(1.0 - holes[prev], to_target,
                                                   fill="constant") > 0.5)).astype(jnp.float32)
      copied = gt * (1.0 - hole) + aligned * hole * seen
      valid = jnp.maximum(1.0 - hole, seen)
      return fill_nearest(copied, valid, max(self.size))

    copied = jax.vmap(prev_frame)(ex["frames"], ex["holes"], ex["motions"], gt, hole)
    return {"mean_fill": mean_fill, "prev_frame": copied}

  def _fixed(self, state: VideoState, batch: Batch, key: jax.Array
             ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Problems and results that depend only on (key, example index), not on the step."""
    ex = self.problems(batch, key, jnp.zeros((), jnp.int32))
    return ex, self.forward(state.params, ex)

  def eval_step(self, state: VideoState, batch: Batch, key: jax.Array) -> Metrics:
    """PSNR / SSIM of the completed target and its hole L1, each [B] (`_scores`); 'scored' [B]:
    1 where the target has a hole."""
    ex, out = self._fixed(state, batch, key)
    return {"scored": _holed(ex["holes"][:, self.target]), **self._scores(out["comp"], ex)}

  def baseline_step(self, batch: Batch, key: jax.Array) -> Metrics:
    """The same scores of both baselines (`_baselines`) on the same problems, prefixed
    'mean_fill_' and 'prev_frame_': computed once per evaluation set by the trainer."""
    ex = self.problems(batch, key, jnp.zeros((), jnp.int32))
    return {f"{name}_{k}": v for name, pred in self._baselines(ex).items()
            for k, v in self._scores(pred, ex).items()}

  def _scores(self, pred: jax.Array, ex: dict[str, jax.Array]) -> Metrics:
    """'psnr', 'ssim' (0 where the target has no hole) and 'hole_l1' (mean |pred - gt| over the
    hole pixels and channels), each [B], of target completions `pred` [B, H, W, 3] in [0, 1]."""
    gt = ex["frames"][:, self.target]
    hole = ex["holes"][:, self.target]
    area = jnp.sum(hole, axis=(1, 2, 3))
    scored = _holed(hole)
    return {"psnr": metrics.psnr(pred, gt) * scored, "ssim": metrics.ssim(pred, gt) * scored,
            "hole_l1": jnp.sum(jnp.abs(pred - gt) * hole, axis=(1, 2, 3)) / (
                3.0 * jnp.maximum(area, 1.0))}

  def summarize_eval(self, sums: dict[str, np.ndarray], count: int) -> dict[str, Any]:
    """Means over the examples whose target has a hole (a target without one is its own ground
    truth and says nothing: real masks, e.g. DAVIS's, can leave a frame), and their number."""
    scored = float(sums["scored"])
    means = {k: float(v) / max(scored, 1.0) for k, v in sums.items() if k != "scored"}
    return {**means, "scored_examples": int(scored)}

  def samples(self, state: VideoState, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """Target ground truth, its masked input, the previous reference aligned by the network,
    and the completed frame; the same problems at every step."""
    ex, out = self._fixed(state, batch, key)
    column = self.refs.index(self.target - 1) if self.target > 0 else 0
    return {"ground_truth": ex["frames"][:, self.target], "input": ex["inputs"][:, self.target],
            "aligned_reference": out["aligned"][:, column], "result": out["comp"]}
