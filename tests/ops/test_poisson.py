"""Tests of cpjax.ops.poisson: exact DST Poisson solves and seamless cloning."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from cpjax.ops import poisson

H, W = 64, 80       # target
HS, WS = 48, 56     # source
OFFSET = (14, 9)    # (dx, dy): source pixel (y, x) -> target pixel (y + 9, x + 14)


def _images(seed: int = 0):
  """Smooth-ish random source [HS, WS, 3], target [H, W, 3] in [0, 1], and an elliptic mask."""
  r = np.random.default_rng(seed)
  source = (0.7 * ndi.gaussian_filter(r.random((HS, WS, 3)), (2, 2, 0)) * 3 - 0.7
            + 0.3 * r.random((HS, WS, 3)))
  target = ndi.gaussian_filter(r.random((H, W, 3)), (3, 3, 0)) * 3 - 1 + 0.1 * r.random((H, W, 3))
  yy, xx = np.mgrid[:HS, :WS]
  mask = ((yy - 22) ** 2 / 15 ** 2 + (xx - 27) ** 2 / 20 ** 2 < 1).astype(np.float32)[..., None]
  return (np.clip(source, 0, 1).astype(np.float32), np.clip(target, 0, 1).astype(np.float32),
          mask)


def _reference(source, target, mask, offset, mode, domain):
  """SciPy sparse direct solve of the discrete problem in the module docstring, written per
  pixel and per edge (Perez's sum over neighbours q of f_p - f_q = sum of v_pq)."""
  dx, dy = offset
  src = np.zeros_like(target)
  msk = np.zeros(target.shape[:2], bool)
  src[dy:dy + HS, dx:dx + WS] = source
  msk[dy:dy + HS, dx:dx + WS] = mask[..., 0] > 0.5
  if mode == "monochrome":
    src = np.repeat(src @ np.array([0.299, 0.587, 0.114], np.float32)[:, None], 3, axis=-1)
  ys, xs = np.nonzero(msk)
  if domain == "box":
    unknown = np.zeros_like(msk)
    unknown[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
  elif domain == "image":
    unknown = np.zeros_like(msk)
    unknown[1:-1, 1:-1] = True
  else:
    unknown = msk
  index = -np.ones(msk.shape, int)
  pts = np.argwhere(unknown)
  index[unknown] = np.arange(len(pts))
  out = target.astype(np.float64).copy()
  for c in range(target.shape[2]):
    rows, cols, vals = [], [], []
    b = np.zeros(len(pts))
    for k, (y, x) in enumerate(pts):
      for qy, qx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
        gs = src[y, x, c] - src[qy, qx, c]
        gt = target[y, x, c] - target[qy, qx, c]
        if msk[y, x] or msk[qy, qx]:
          v = gs if mode != "mixed" or abs(gs) > abs(gt) else gt
        else:
          v = gt
        rows.append(k), cols.append(k), vals.append(1.0)
        b[k] += v
        if unknown[qy, qx]:
          rows.append(k), cols.append(index[qy, qx]), vals.append(-1.0)
        else:
          b[k] += target[qy, qx, c]
    a = sp.csr_matrix((vals, (rows, cols)), shape=(len(pts), len(pts)))
    out[pts[:, 0], pts[:, 1], c] = spl.spsolve(a, b)
  return out


def test_dst_solve_satisfies_the_system():
  """dst_poisson_solve: 5-point Laplacian of the result = rhs inside, = boundary on the ring."""
  r = np.random.default_rng(1)
  rhs = r.normal(size=(13, 17, 2)).astype(np.float32)
  boundary = r.random((15, 19, 2)).astype(np.float32)
  f = np.asarray(poisson.dst_poisson_solve(jnp.asarray(rhs), jnp.asarray(boundary)))
  lap = f[:-2, 1:-1] + f[2:, 1:-1] + f[1:-1, :-2] + f[1:-1, 2:] - 4 * f[1:-1, 1:-1]
  np.testing.assert_allclose(lap, rhs, atol=1e-4)
  ring = np.ones((15, 19), bool)
  ring[1:-1, 1:-1] = False
  np.testing.assert_array_equal(f[ring], boundary[ring])


@pytest.mark.parametrize("mode,domain", [("normal", "box"), ("normal", "mask"),
                                         ("mixed", "box"), ("mixed", "mask"),
                                         ("monochrome", "box")])
def test_matches_scipy_sparse_direct_solve(mode, domain):
  """seamless_clone equals a SciPy spsolve of the same discrete problem within 1e-3."""
  source, target, mask = _images()
  ours = poisson.seamless_clone(jnp.asarray(source), jnp.asarray(target), jnp.asarray(mask),
                                offset=OFFSET, mode=mode, domain=domain)
  ref = _reference(source, target, mask, OFFSET, mode, domain)
  assert np.abs(np.asarray(ours) - ref).max() < 1e-3


def test_image_box_is_exact_and_jittable():
  """box='image' under jit (traced mask, one compile per shape) equals SciPy's solve with every
  interior pixel of the target unknown, within 1e-3."""
  source, target, mask = _images(2)
  fn = jax.jit(lambda s, t, m: poisson.seamless_clone(s, t, m, offset=OFFSET, box="image"))
  ours = np.asarray(fn(source, target, mask))
  ref = _reference(source, target, mask, OFFSET, "normal", "image")
  assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.parametrize("domain", ["box", "mask"])
def test_identical_source_and_target_give_target(domain):
  """Source = target (same frame): the output is the target within 1e-5."""
  _, target, _ = _images()
  mask = np.zeros((H, W, 1), np.float32)
  mask[20:45, 15:60] = 1
  out = poisson.seamless_clone(jnp.asarray(target), jnp.asarray(target), jnp.asarray(mask),
                               domain=domain)
  np.testing.assert_allclose(np.asarray(out), target, atol=1e-5)


@pytest.mark.parametrize("mode", ["normal", "mixed"])
def test_constant_shift_of_source_is_invisible(mode):
  """Source = target + 0.3 around the mask (same gradients there): the output is the target."""
  source, target, mask = _images()
  dx, dy = OFFSET
  grown = ndi.binary_dilation(mask[..., 0] > 0.5, iterations=2)[..., None]
  source = np.where(grown, target[dy:dy + HS, dx:dx + WS] + 0.3, source).astype(np.float32)
  out = poisson.seamless_clone(jnp.asarray(source), jnp.asarray(target), jnp.asarray(mask),
                               offset=OFFSET, mode=mode)
  np.testing.assert_allclose(np.asarray(out), target, atol=1e-5)


def test_close_to_opencv_normal_clone():
  """Against cv2.seamlessClone(NORMAL_CLONE) on uint8 images and a rectangular mask.

  Same placement (cv2's centre p = box top-left + offset + box size // 2) and same equation deep
  inside the mask: there the Laplacian of both results equals the source's (cv2 up to its
  uint8 rounding, mean < 1.5 levels). The solutions still differ by a harmonic function because
  the boundary problems differ: OpenCV erodes the mask (3x, 3x3) so a band of target gradients
  lies inside it, takes its Dirichlet ring on the mask's outermost pixels rather than 1 px
  outside, and rounds and saturates to uint8. Measured mean |ours - cv2| in the box: 5.5 levels
  of 255 (naive paste: 10.4); we bound it at 7, and require 0 outside the box.
  """
  r = np.random.default_rng(0)

  def smooth(shape, s):
    return ndi.gaussian_filter(r.random(shape), (s, s, 0))

  tgt = (np.clip((smooth((96, 128, 3), 6) - 0.5) * 4 + 0.5, 0, 1) * 255).round().astype(np.uint8)
  src = (np.clip((smooth((80, 80, 3), 4) - 0.5) * 4 + 0.5, 0, 1) * 255).round().astype(np.uint8)
  mask = np.zeros((80, 80), np.uint8)
  mask[20:60, 15:65] = 255
  dx, dy = 30, 10
  y0, x0, h, w = 20, 15, 40, 50
  center = (x0 + dx + w // 2, y0 + dy + h // 2)
  cv = cv2.seamlessClone(src, tgt, mask.copy(), center, cv2.NORMAL_CLONE).astype(np.float32)
  ours = np.asarray(poisson.seamless_clone(
      jnp.asarray(src / 255.0, jnp.float32), jnp.asarray(tgt / 255.0, jnp.float32),
      jnp.asarray(mask[..., None] / 255.0, jnp.float32), offset=(dx, dy))) * 255
  box = (slice(y0 + dy, y0 + dy + h), slice(x0 + dx, x0 + dx + w))
  diff = np.abs(ours - cv)
  assert diff[box].mean() < 7.0
  outside = np.ones(diff.shape[:2], bool)
  outside[y0 + dy - 1:y0 + dy + h + 1, x0 + dx - 1:x0 + dx + w + 1] = False
  assert diff[outside].max() == 0

  def lap(a):
    return a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] - 4 * a[1:-1, 1:-1]

  deep = (slice(y0 + 4, y0 + h - 6), slice(x0 + 4, x0 + w - 6))  # 5 px inside, in lap indices
  deep_t = (slice(y0 + dy + 4, y0 + dy + h - 6), slice(x0 + dx + 4, x0 + dx + w - 6))
  lap_src = lap(src.astype(np.float32))[deep]
  assert np.abs(lap(cv)[deep_t] - lap_src).mean() < 1.5
  assert np.abs(lap(ours)[deep_t] - lap_src).max() < 1e-2


def _cv2_case(name: str):
  """uint8 smooth random RGB source (80x80) and target (96x128), a uint8 mask and an offset.

  'rect': a rectangle (its bounding box is itself, so OpenCV's erosion decides the result);
  'blobs': an ellipse and a separate square (two components, a non-convex box);
  'edge': a mask reaching the source's top and right borders, which OpenCV drops, placed so
  that its bounding box touches the target's top edge.
  """
  r = np.random.default_rng(3)

  def smooth(shape, s):
    image = (ndi.gaussian_filter(r.random(shape), (s, s, 0)) - 0.5) * 5 + 0.5
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)

  source, target = smooth((80, 80, 3), 3), smooth((96, 128, 3), 5)
  mask = np.zeros((80, 80), np.uint8)
  yy, xx = np.mgrid[:80, :80]
  if name == "rect":
    mask[20:60, 15:65] = 255
    offset = (30, 10)
  elif name == "blobs":
    mask[((yy - 40) / 25) ** 2 + ((xx - 45) / 28) ** 2 < 1] = 255
    mask[20:30, 4:12] = 255
    offset = (30, 10)
  else:
    mask[0:50, 10:80] = 255
    offset = (40, -1)
  return source, target, mask, offset


def _cv2_seamless_clone(source, target, mask, offset, mode):
  """cv2.seamlessClone of RGB arrays (OpenCV's channel order is BGR) at our offset: its centre
  p is the placed bounding box's (x0 + w // 2, y0 + h // 2), the mask's source border excluded.
  Returns the result and the placed bounding box (slices)."""
  inner = np.zeros_like(mask)
  inner[1:-1, 1:-1] = mask[1:-1, 1:-1]
  ys, xs = np.nonzero(inner)
  dx, dy = offset
  y0, x0, h, w = ys.min() + dy, xs.min() + dx, np.ptp(ys) + 1, np.ptp(xs) + 1
  flag = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE,
          "monochrome": cv2.MONOCHROME_TRANSFER}[mode]
  out = cv2.seamlessClone(np.ascontiguousarray(source[..., ::-1]),
                          np.ascontiguousarray(target[..., ::-1]), mask.copy(),
                          (int(x0 + w // 2), int(y0 + h // 2)), flag)
  return out[..., ::-1].astype(np.float32), np.s_[y0:y0 + h, x0:x0 + w]


def _assert_matches_cv2(ours: np.ndarray, cv: np.ndarray, box) -> None:
  """OpenCV truncates its float solution f to uint8 (saturating): cv2 = floor(clip(255 f)). So
  with the same f, cv2 <= clip(255 ours) < cv2 + 1 everywhere: within 1/255. Float32 round-off
  of the two solvers (~1e-3 levels) may move the floor where 255 f is that close to an integer,
  so the floors must agree on all but 0.5% of the box's pixels (measured: at most 0.23%), and
  outside the box both are the target exactly."""
  f = np.clip(ours * 255, 0, 255)
  d = f - cv
  assert d[box].min() > -0.01 and d[box].max() < 1.01, (d[box].min(), d[box].max())
  assert np.mean(np.floor(f[box]) != cv[box]) < 0.005
  outside = np.ones(cv.shape[:2], bool)
  outside[box] = False
  np.testing.assert_allclose(f[outside], cv[outside], atol=1e-3)


@pytest.mark.parametrize("mode", poisson.MODES)
@pytest.mark.parametrize("case", ["rect", "blobs", "edge"])
def test_opencv_domain_matches_cv2_seamless_clone(mode, case):
  """domain='opencv' reproduces cv2.seamlessClone (NORMAL_CLONE, MIXED_CLONE,
  MONOCHROME_TRANSFER) within 1/255 (`_assert_matches_cv2`): the tight box (one DST solve)."""
  source, target, mask, offset = _cv2_case(case)
  cv, box = _cv2_seamless_clone(source, target, mask, offset, mode)
  ours = poisson.seamless_clone(jnp.asarray(source / 255, jnp.float32),
                                jnp.asarray(target / 255, jnp.float32),
                                jnp.asarray(mask[..., None] / 255, jnp.float32), offset=offset,
                                mode=mode, domain="opencv")
  _assert_matches_cv2(np.asarray(ours), cv, box)


@pytest.mark.parametrize("mode,box", [("normal", "image"), ("mixed", "image"),
                                      ("monochrome", "image"), ("normal", "bbox")])
def test_opencv_domain_under_jit_matches_cv2(mode, box):
  """Under jit (traced mask), within 1/255 of cv2: box='image' solves the same problem by
  multigrid CG; a static box of the bounding box's size by the DST (chosen at run time)."""
  source, target, mask, offset = _cv2_case("blobs")
  cv, placed = _cv2_seamless_clone(source, target, mask, offset, mode)
  if box == "bbox":
    box = (placed[0].stop - placed[0].start, placed[1].stop - placed[1].start)
  fn = jax.jit(lambda s, t, m: poisson.seamless_clone(s, t, m, offset=offset, mode=mode,
                                                      domain="opencv", box=box))
  ours = fn(jnp.asarray(source / 255, jnp.float32), jnp.asarray(target / 255, jnp.float32),
            jnp.asarray(mask[..., None] / 255, jnp.float32))
  _assert_matches_cv2(np.asarray(ours), cv, placed)


def test_opencv_domain_vmap_and_grad():
  """'opencv' in a static box larger than the mask's (CG) under vmap equals the tight (DST)
  result per example within 1e-4; gradients reach the source through the 8-bit luminance of
  'monochrome' (straight-through) and are finite."""
  source, target, mask = _images()
  fn = lambda s, t: poisson.seamless_clone(  # noqa: E731
      s, t, jnp.asarray(mask), offset=OFFSET, mode="monochrome", domain="opencv", box=(40, 50))
  batch = np.stack([source, source[::-1]]), np.stack([target, target[:, ::-1]])
  out = jax.jit(jax.vmap(fn))(*map(jnp.asarray, batch))
  for i in range(2):
    tight = poisson.seamless_clone(batch[0][i], batch[1][i], mask, offset=OFFSET,
                                   mode="monochrome", domain="opencv")
    np.testing.assert_allclose(np.asarray(out[i]), np.asarray(tight), atol=1e-4)
  loss = lambda s, t: jnp.sum(fn(s, t) ** 2)  # noqa: E731
  gs, gt = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(source), jnp.asarray(target))
  assert np.isfinite(np.asarray(gs)).all() and np.isfinite(np.asarray(gt)).all()
  assert np.abs(np.asarray(gs)).sum() > 0


def _sparse_mask_solve(source, target, mask):
  """SciPy direct solve of the 'mask' problem (module docstring, mode 'normal'), vectorised:
  for each mask pixel p, 4 f_p - sum of its mask neighbours = sum over its 4 edges of the
  source's difference s_p - s_q + the target at neighbours outside the mask. The mask must stay
  1 px inside the image."""
  inside = mask[..., 0] > 0.5
  index = -np.ones(inside.shape, int)
  pts = np.argwhere(inside)
  index[inside] = np.arange(len(pts))
  y, x = pts[:, 0], pts[:, 1]
  rows, cols, vals = [np.arange(len(pts))], [np.arange(len(pts))], [np.full(len(pts), 4.0)]
  b = np.zeros((len(pts), target.shape[2]))
  for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
    qy, qx = y + dy, x + dx
    b += source[y, x] - source[qy, qx]
    known = ~inside[qy, qx]
    b[known] += target[qy[known], qx[known]]
    rows.append(np.flatnonzero(~known)), cols.append(index[qy[~known], qx[~known]])
    vals.append(-np.ones((~known).sum()))
  a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                    shape=(len(pts), len(pts)))
  out = target.astype(np.float64).copy()
  out[inside] = spl.splu(a).solve(b)
  return out


def test_mask_domain_multigrid_matches_scipy_on_a_larger_ragged_mask():
  """A 160x192 noise source and target and a ragged two-part mask (5 multigrid grids): the
  'mask' domain equals SciPy's sparse direct solve within 1e-3 (measured 1e-4), with box='tight'
  and with box='image' under jit."""
  r = np.random.default_rng(5)
  source = r.random((160, 192, 3)).astype(np.float32)
  target = r.random((160, 192, 3)).astype(np.float32)
  yy, xx = np.mgrid[:160, :192]
  inside = ((yy - 85) / 66) ** 2 + ((xx - 85) / 75) ** 2 < 1
  inside &= ndi.gaussian_filter(r.random((160, 192)), 4) > 0.47
  inside |= (np.abs(yy - 20) < 10) & (np.abs(xx - 165) < 16)
  mask = inside[..., None].astype(np.float32)
  ref = _sparse_mask_solve(source, target, mask)
  ours = poisson.seamless_clone(source, target, mask, domain="mask")
  assert np.abs(np.asarray(ours) - ref).max() < 1e-3
  fn = jax.jit(lambda s, t, m: poisson.seamless_clone(s, t, m, domain="mask", box="image"))
  assert np.abs(np.asarray(fn(source, target, mask)) - ref).max() < 1e-3


def test_multigrid_preconditioner_is_symmetric_positive_definite():
  """CG needs an SPD preconditioner: on a ragged 45x70 mask (4 grids, odd and even sizes) one
  V-cycle M satisfies <M a, b> = <a, M b> and <M a, a> > 0 for random a, b (float64)."""
  r = np.random.default_rng(7)
  mask = (ndi.gaussian_filter(r.random((45, 70)), 3) > 0.48)[None].astype(np.float64)
  masks = poisson._coarse_masks(jnp.asarray(mask))
  assert len(masks) >= 3
  with jax.enable_x64(True):
    a, b = (jnp.asarray(mask * r.normal(size=(2, 45, 70))) for _ in range(2))
    ma, mb = poisson._v_cycle(a, masks), poisson._v_cycle(b, masks)
    np.testing.assert_allclose(float(jnp.vdot(ma, b)), float(jnp.vdot(a, mb)), rtol=1e-10)
    assert float(jnp.vdot(ma, a)) > 0


def test_offset_outside_target_raises():
  """A mask that would land on the target's border raises a ValueError naming the offsets."""
  source, target, mask = _images()
  # The mask covers source rows 8..36 and columns 8..46; the target is 64x80 with a 1-px ring.
  with pytest.raises(ValueError, match=r"use dx in \[-7, 32\] and dy in \[-7, 26\]"):
    poisson.seamless_clone(jnp.asarray(source), jnp.asarray(target), jnp.asarray(mask),
                           offset=(40, 0))
  for bad in [(33, 0), (0, 27), (-8, 0), (0, -8)]:
    with pytest.raises(ValueError):
      poisson.seamless_clone(source, target, mask, offset=bad)
  for good in [(32, 26), (-7, -7)]:
    assert np.isfinite(np.asarray(poisson.seamless_clone(source, target, mask, offset=good))).all()


def test_vmap_and_grad():
  """vmap over a batch equals per-example calls; grads w.r.t. source and target are finite."""
  source, target, mask = _images()
  batch = np.stack([source, source[::-1]]), np.stack([target, target[:, ::-1]])
  fn = lambda s, t: poisson.seamless_clone(s, t, jnp.asarray(mask), offset=OFFSET,  # noqa: E731
                                           box=(32, 42), domain="mask")
  out = jax.jit(jax.vmap(fn))(*map(jnp.asarray, batch))
  for i in range(2):
    np.testing.assert_allclose(np.asarray(out[i]), np.asarray(fn(batch[0][i], batch[1][i])),
                               atol=1e-5)
  loss = lambda s, t: jnp.sum(fn(s, t) ** 2)  # noqa: E731
  gs, gt = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(source), jnp.asarray(target))
  assert np.isfinite(np.asarray(gs)).all() and np.isfinite(np.asarray(gt)).all()
  assert np.abs(np.asarray(gs)).sum() > 0


def test_tight_box_under_jit_says_what_to_do():
  """box='tight' with a traced mask raises a ValueError pointing to box=(h, w) or 'image'."""
  source, target, mask = _images()
  fn = jax.jit(lambda s, t, m: poisson.seamless_clone(s, t, m, offset=OFFSET))
  with pytest.raises(ValueError, match=r"pass box=\(h, w\) or box='image'"):
    fn(source, target, mask)
