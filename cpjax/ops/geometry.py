"""Geometric operations on device: crops, 4-point homographies, homography and affine warps.

Two coordinate conventions, related by x_index = x_continuous - 0.5:
  * continuous (`crop_and_resize`, `cpjax.ops.masks`): pixel (row i, column j) covers
    [i, i + 1) x [j, j + 1), so its centre is at (i + 0.5, j + 0.5); boxes are given by their edges.
  * index, OpenCV's (`bilinear_sample`, `homography_from_points`, `warp_perspective`,
    `affine_warp`, `random_homography`): integer coordinates are pixel centres, pixel (i, j) is
    at (x=j, y=i), and the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]. Matrices therefore
    mean the same as in cv2.getPerspectiveTransform / cv2.warpPerspective / cv2.warpAffine
    and can be exchanged with OpenCV unchanged. Points are (x, y) = (column, row), as in OpenCV.
A matrix A in index coordinates is S A S^-1 in continuous ones, with S a translation by +0.5.

Fill modes for samples that fall outside the image (names as in `np.pad`):
  'reflect'   d c b | a b c d | c b a  (cv2.BORDER_REFLECT_101, scipy 'mirror')
  'symmetric' c b a | a b c d | d c b  (cv2.BORDER_REFLECT, scipy 'reflect')
  'edge'      a a a | a b c d | d d d  (cv2.BORDER_REPLICATE)
  'constant'  0 0 0 | a b c d | 0 0 0  (cv2.BORDER_CONSTANT with value 0)
As in OpenCV, a bilinear sample mixes the four neighbours after each one has been mapped by the
fill mode, so 'constant' fades to 0 over the last pixel.

All functions work on one example (no batch axis); use `jax.vmap` for batches.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Our fill names -> jax.scipy.ndimage.map_coordinates modes.
_FILL_MODES = {"reflect": "mirror", "symmetric": "reflect", "edge": "nearest",
               "constant": "constant"}
FILLS = tuple(_FILL_MODES)


def crop_and_resize(image: jax.Array, box: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinearly resamples the box of an image to a fixed size (differentiable w.r.t. image).

  Args:
    image: [H, W, C] float.
    box: [4] (y0, x0, y1, x1) in continuous pixel coordinates (see module docstring); it may
      extend past the image, where the nearest edge pixels are repeated.
    size: (h, w) of the output.

  Returns:
    [h, w, C] float, the same dtype as image.
  """
  out_h, out_w = size
  y0, x0, y1, x1 = box[0], box[1], box[2], box[3]
  scale = jnp.stack([out_h / jnp.maximum(y1 - y0, 1e-3), out_w / jnp.maximum(x1 - x0, 1e-3)])
  translation = -jnp.stack([y0, x0]) * scale
  return jax.image.scale_and_translate(
      image, (out_h, out_w, image.shape[-1]), spatial_dims=(0, 1), scale=scale,
      translation=translation, method="linear", antialias=False)


def _normalizing_transform(points: jax.Array) -> jax.Array:
  """Hartley normalisation: [3, 3] similarity moving points to mean 0, mean distance sqrt(2)."""
  centre = jnp.mean(points, axis=0)
  dist = jnp.mean(jnp.linalg.norm(points - centre, axis=-1))
  scale = jnp.sqrt(2.0) / jnp.maximum(dist, 1e-8)
  return jnp.array([[scale, 0.0, -scale * centre[0]],
                    [0.0, scale, -scale * centre[1]],
                    [0.0, 0.0, 1.0]], dtype=points.dtype)


def _normalizing_inverse(t: jax.Array) -> jax.Array:
  """Inverse of a `_normalizing_transform` (uniform scale + translation), in closed form."""
  scale = t[0, 0]
  return jnp.array([[1.0 / scale, 0.0, -t[0, 2] / scale],
                    [0.0, 1.0 / scale, -t[1, 2] / scale],
                    [0.0, 0.0, 1.0]], dtype=t.dtype)


def _inverse3(m: jax.Array) -> jax.Array:
  """Inverse of a [3, 3] matrix by the adjugate (no LU: cheap to compile, exact enough for the
  well-conditioned warps used here)."""
  r0, r1, r2 = m[0], m[1], m[2]
  adjugate = jnp.stack([jnp.cross(r1, r2), jnp.cross(r2, r0), jnp.cross(r0, r1)], axis=1)
  return adjugate / jnp.dot(r0, jnp.cross(r1, r2))


def _apply_h(h: jax.Array, points: jax.Array) -> jax.Array:
  """Applies a [3, 3] homography to [N, 2] (x, y) points (no guard against w = 0)."""
  p = points @ h[:, :2].T + h[:, 2]
  return p[:, :2] / p[:, 2:]


def homography_from_points(src: jax.Array, dst: jax.Array) -> jax.Array:
  """The homography H with H src_i ~ dst_i and H[2, 2] = 1 (cv2.getPerspectiveTransform).

  Solves the 2N x 8 linear system of the correspondences in the least-squares sense (paper
  sec. 3.1.2), on Hartley-normalised points so that float32 is accurate: for N = 4 points in
  general position the system is square and solved exactly (LU), for N > 4 through the normal
  equations.

  Args:
    src: [N, 2] (x, y) points, N >= 4, any coordinate convention (used as given).
    dst: [N, 2] (x, y) points.

  Returns:
    [3, 3] float32 H mapping src to dst (homogeneous, H[2, 2] = 1).
  """
  src = jnp.asarray(src, jnp.float32)
  dst = jnp.asarray(dst, jnp.float32)
  t_src, t_dst = _normalizing_transform(src), _normalizing_transform(dst)
  s, d = _apply_h(t_src, src), _apply_h(t_dst, dst)
  x, y, u, v = s[:, 0], s[:, 1], d[:, 0], d[:, 1]
  one, zero = jnp.ones_like(x), jnp.zeros_like(x)
  rows_u = jnp.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
  rows_v = jnp.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
  a = jnp.concatenate([rows_u, rows_v], 0)
  b = jnp.concatenate([u, v], 0)
  if a.shape[0] == 8:  # 4 points: the least-squares solution is the exact one; LU compiles fast
    coef = jnp.linalg.solve(a, b)
  else:  # normal equations, well conditioned on normalised points
    coef = jnp.linalg.solve(a.T @ a, a.T @ b)
  h_norm = jnp.append(coef, 1.0).reshape(3, 3)
  h = _normalizing_inverse(t_dst) @ h_norm @ t_src
  return h / h[2, 2]


def bilinear_sample(image: jax.Array, ys: jax.Array, xs: jax.Array,
                    fill: str = "reflect") -> jax.Array:
  """Samples an image bilinearly at real-valued index coordinates (integer = pixel centre).

  Uses jax.scipy.ndimage.map_coordinates (order 1) per channel; differentiable w.r.t. the
  image and the coordinates.

  Args:
    image: [H, W, C] float.
    ys, xs: [...] row and column coordinates (same shape), index convention.
    fill: what is read outside the image: 'reflect', 'symmetric', 'edge' or 'constant' (0);
      see the module docstring.

  Returns:
    [..., C] float, the dtype of image.
  """
  if fill not in _FILL_MODES:
    raise ValueError(f"cpjax.ops.geometry: fill={fill!r}; use one of {FILLS}.")
  mode = _FILL_MODES[fill]
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(
      channel, [ys, xs], order=1, mode=mode, cval=0.0)
  return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)


def _pixel_grid(height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """Index coordinates (ys, xs), each [height, width] float32, of all pixel centres."""
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  return ys, xs


def warp_perspective(image: jax.Array, h: jax.Array, fill: str = "reflect") -> jax.Array:
  """Warps an image by a homography: out(p) = image(h^-1 p), like cv2.warpPerspective.

  Same result as `cv2.warpPerspective(image, h, (W, H), flags=cv2.INTER_LINEAR,
  borderMode=...)` for float images (measured: within 1e-5; for uint8 OpenCV quantises sample
  positions to 1/32 px): `h` maps input to output index coordinates (integer = pixel centre,
  (x, y) order).

  Args:
    image: [H, W, C] float.
    h: [3, 3] homography, input -> output.
    fill: what fills output pixels whose source lies outside the image (module docstring).
      The default 'reflect' (BORDER_REFLECT_101) fills them with mirrored content, as the
      paper intends (content gets lost and duplicated), instead of black borders that a
      network could trivially detect.

  Returns:
    [H, W, C] float, the dtype of image.
  """
  height, width = image.shape[-3], image.shape[-2]
  ys, xs = _pixel_grid(height, width)
  h_inv = _inverse3(jnp.asarray(h, jnp.float32))
  u = h_inv[0, 0] * xs + h_inv[0, 1] * ys + h_inv[0, 2]
  v = h_inv[1, 0] * xs + h_inv[1, 1] * ys + h_inv[1, 2]
  w = h_inv[2, 0] * xs + h_inv[2, 1] * ys + h_inv[2, 2]
  w = jnp.where(jnp.abs(w) < 1e-8, jnp.where(w < 0, -1e-8, 1e-8), w)
  return bilinear_sample(image, v / w, u / w, fill)


def affine_warp(image: jax.Array, matrix: jax.Array, fill: str = "reflect") -> jax.Array:
  """Warps an image by an affine map: out(p) = image(A^-1 p), like cv2.warpAffine.

  Same result as `cv2.warpAffine(image, matrix, (W, H), flags=cv2.INTER_LINEAR,
  borderMode=...)` for float images.

  Args:
    image: [H, W, C] float.
    matrix: [2, 3] affine map, input -> output index coordinates ((x, y) order).
    fill: what fills output pixels whose source lies outside the image (module docstring).

  Returns:
    [H, W, C] float, the dtype of image.
  """
  matrix = jnp.asarray(matrix, jnp.float32)
  h = jnp.concatenate([matrix, jnp.array([[0.0, 0.0, 1.0]], jnp.float32)], axis=0)
  return warp_perspective(image, h, fill)


def image_corners(height: int, width: int) -> jax.Array:
  """[4, 2] (x, y) index coordinates of the four corner pixels' centres, clockwise from (0, 0)."""
  return jnp.array([[0.0, 0.0], [width - 1.0, 0.0], [width - 1.0, height - 1.0],
                    [0.0, height - 1.0]], jnp.float32)


def random_homography(key: jax.Array, height: int, width: int,
                      sigma: float | jax.Array) -> jax.Array:
  """A random homography near the identity (paper sec. 3.1.2).

  Each of the 4 corner pixels p_i (index coordinates) moves to p_i + o_i, with every coordinate
  of o_i drawn independently from U(-sigma, sigma) pixels; H solves p_i -> p_i + o_i.

  Args:
    key: PRNG key.
    height, width: image size.
    sigma: maximum corner offset in pixels (paper: 15 at 512 px); 0 gives the identity.

  Returns:
    [3, 3] float32 H, input -> output, H[2, 2] = 1.
  """
  corners = image_corners(height, width)
  offsets = jax.random.uniform(key, (4, 2), jnp.float32, -1.0, 1.0) * sigma
  return homography_from_points(corners, corners + offsets)


def random_geometric(key: jax.Array, image: jax.Array, sigma: float | jax.Array,
                     fill: str = "reflect") -> jax.Array:
  """T_geometric: warps the image by `random_homography` (paper sec. 3.1.2).

  Args:
    key: PRNG key.
    image: [H, W, C] float.
    sigma: maximum corner offset in pixels.
    fill: fill mode for content from outside the image (default 'reflect', see
      `warp_perspective`).

  Returns:
    [H, W, C] float, the dtype of image.
  """
  height, width = image.shape[-3], image.shape[-2]
  return warp_perspective(image, random_homography(key, height, width, sigma), fill)


def normalized_affine_to_pixels(theta: jax.Array, height: int, width: int) -> jax.Array:
  """PyTorch `affine_grid(theta, align_corners=True)` as an index-coordinate sampling map.

  `theta` maps normalised OUTPUT coordinates (x, y) in [-1, 1] (-1 and 1 are the centres of the
  first and last pixels: align_corners=True) to normalised INPUT coordinates. The returned
  matrix maps output index coordinates (x = column, y = row; module docstring) to input index
  coordinates: it is the matrix `cv2.warpAffine` takes with `cv2.WARP_INVERSE_MAP`.

  Args:
    theta: [2, 3] float, normalised output -> input (the video-inpainting alignment network's
      output, `cpjax.models.video_cpn`).
    height, width: image size (>= 2 each).

  Returns:
    [2, 3] float32 index-coordinate map, output -> input.
  """
  theta = jnp.asarray(theta, jnp.float32)
  # index -> normalised: u = 2 x / (W - 1) - 1; normalised -> index: x = (u + 1) (W - 1) / 2.
  sx, sy = 2.0 / (width - 1), 2.0 / (height - 1)
  to_norm = jnp.array([[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]], jnp.float32)
  to_index = jnp.array([[1.0 / sx, 0.0, 1.0 / sx], [0.0, 1.0 / sy, 1.0 / sy]], jnp.float32)
  theta3 = jnp.concatenate([theta, jnp.array([[0.0, 0.0, 1.0]], jnp.float32)], axis=0)
  return to_index @ theta3 @ to_norm


def affine_grid_sample(image: jax.Array, theta: jax.Array, fill: str = "constant") -> jax.Array:
  """PyTorch `grid_sample(image, affine_grid(theta))` with align_corners=True, bilinear.

  out(p) = image(theta p) in normalised coordinates (see `normalized_affine_to_pixels`); with
  the default fill 'constant' (PyTorch padding_mode='zeros') samples outside the image read 0,
  each of the four bilinear neighbours separately. The same result as `cv2.warpAffine(image,
  normalized_affine_to_pixels(theta, H, W), (W, H), flags=cv2.INTER_LINEAR |
  cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)` for float images.

  Args:
    image: [H, W, C] float.
    theta: [2, 3] normalised output -> input affine map.
    fill: fill mode outside the image (module docstring).

  Returns:
    [H, W, C] float, the dtype of image; differentiable w.r.t. image and theta.
  """
  height, width = image.shape[-3], image.shape[-2]
  m = normalized_affine_to_pixels(theta, height, width)
  ys, xs = _pixel_grid(height, width)
  src_x = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
  src_y = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
  return bilinear_sample(image, src_y, src_x, fill)


def compose_affine(outer: jax.Array, inner: jax.Array) -> jax.Array:
  """The [2, 3] affine map `outer o inner` (apply inner first)."""
  inner3 = jnp.concatenate([inner, jnp.array([[0.0, 0.0, 1.0]], inner.dtype)], axis=0)
  return outer @ inner3


def affine_about_center(height: int, width: int, *, rotation: jax.Array | float = 0.0,
                        shear: jax.Array | float = 0.0, scale: jax.Array | float = 1.0,
                        translation: jax.Array | tuple[float, float] = (0.0, 0.0),
                        center: jax.Array | None = None) -> jax.Array:
  """An affine map in index coordinates built from rotation, shear, scale and translation.

  A = T(center + translation) R(rotation) Sh(shear) S(scale) T(-center): points are scaled,
  sheared (x += shear * y) and rotated about `center` (default: the image centre
  ((W - 1) / 2, (H - 1) / 2)), then moved by `translation`. Positive rotation turns +x towards
  +y (clockwise on screen), as `cv2.getRotationMatrix2D` with a negative angle.

  Args:
    height, width: image size.
    rotation: radians.
    shear: horizontal shear factor.
    scale: scalar or [2] (sx, sy) zoom factors.
    translation: [2] (dx, dy) pixels.
    center: [2] (x, y) index coordinates of the fixed point; default the image centre.

  Returns:
    [2, 3] float32, input -> output index coordinates (OpenCV convention, `affine_warp`).
  """
  if center is None:
    center = jnp.array([(width - 1) / 2.0, (height - 1) / 2.0], jnp.float32)
  center = jnp.asarray(center, jnp.float32)
  scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (2,))
  cos, sin = jnp.cos(rotation), jnp.sin(rotation)
  rot = jnp.array([[cos, -sin], [sin, cos]], jnp.float32).reshape(2, 2)
  shear_m = jnp.array([[1.0, shear], [0.0, 1.0]], jnp.float32).reshape(2, 2)
  linear = rot @ shear_m @ jnp.diag(scale)
  offset = center + jnp.asarray(translation, jnp.float32) - linear @ center
  return jnp.concatenate([linear, offset[:, None]], axis=1)


def random_affine(key: jax.Array, height: int, width: int, *, rotation: float, shear: float,
                  scale: float, translation: float) -> jax.Array:
  """A random `affine_about_center` near the identity, every parameter drawn uniformly.

  Args:
    key: PRNG key.
    height, width: image size.
    rotation: maximum |angle| in radians.
    shear: maximum |shear factor|.
    scale: maximum |log zoom|: the zoom is exp(U(-scale, scale)), the same on both axes.
    translation: maximum |shift| as a fraction of the image side (x of the width, y of the
      height).

  Returns:
    [2, 3] float32, input -> output index coordinates.
  """
  u = jax.random.uniform(key, (5,), jnp.float32, -1.0, 1.0)
  shift = u[3:5] * translation * jnp.array([width, height], jnp.float32)
  return affine_about_center(height, width, rotation=u[0] * rotation, shear=u[1] * shear,
                             scale=jnp.exp(u[2] * scale), translation=shift)


def random_affine_path(key: jax.Array, num_steps: int, height: int, width: int, *,
                       rotation: float, shear: float, scale: float,
                       translation: float) -> jax.Array:
  """Successive random affine motions: A_0 = I, A_t = D_t o A_{t-1}, D_t = `random_affine`.

  Args:
    key: PRNG key.
    num_steps: number of maps T.
    height, width: image size (the motions act about its centre).
    rotation, shear, scale, translation: ranges of each step D_t (see `random_affine`).

  Returns:
    [T, 2, 3] float32 maps (index coordinates, input -> output); the first is the identity.
  """
  keys = jax.random.split(key, num_steps - 1)
  steps = jax.vmap(lambda k: random_affine(k, height, width, rotation=rotation, shear=shear,
                                           scale=scale, translation=translation))(keys)
  identity = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], jnp.float32)

  def advance(current, step):
    nxt = compose_affine(step, current)
    return nxt, nxt

  _, rest = jax.lax.scan(advance, identity, steps)
  return jnp.concatenate([identity[None], rest], axis=0)


def _align_corners_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source taps of a 1-D align_corners=True linear resize: (lower index, upper index, weight of
  the upper one), each [out_size]. Output sample i reads input position i (in - 1) / (out - 1)
  (0 when out_size == 1, as PyTorch does); computed in float64 NumPy at trace time."""
  if out_size == 1 or in_size == 1:
    pos = np.zeros(out_size)
  else:
    pos = np.arange(out_size) * ((in_size - 1) / (out_size - 1))
  lower = np.minimum(np.floor(pos).astype(np.int32), in_size - 1)
  upper = np.minimum(lower + 1, in_size - 1)
  return lower, upper, (pos - lower).astype(np.float32)


def resize_bilinear_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize with PyTorch's `F.interpolate(..., mode='bilinear', align_corners=True)`.

  The corner pixels' centres of input and output coincide: output pixel (i, j) samples the
  input at index coordinates (i (H - 1) / (h - 1), j (W - 1) / (w - 1)) (module docstring), so
  the corners are copied exactly and a same-size resize is the identity. `jax.image.resize` is
  half-pixel aligned (align_corners=False) and anti-aliases when shrinking; this one does
  neither, like PyTorch (the HRNet fusion and OCR layers of iDIH-HRNet were trained with it).
  Separable: two gathers and linear interpolations, rows then columns; differentiable w.r.t. x.

  Args:
    x: [..., H, W, C] float (any leading axes, e.g. a batch).
    size: (h, w) output size, each >= 1.

  Returns:
    [..., h, w, C], the dtype of x.
  """
  out_h, out_w = size
  if out_h < 1 or out_w < 1:
    raise ValueError(f"cpjax.ops.geometry: resize to {size}; give a size of at least 1x1.")
  for axis, out_size in ((-3, out_h), (-2, out_w)):
    lower, upper, frac = _align_corners_taps(x.shape[axis], out_size)
    weight = jnp.asarray(frac, x.dtype).reshape((-1,) + (1,) * (-axis - 1))
    a = jnp.take(x, lower, axis=axis)
    b = jnp.take(x, upper, axis=axis)
    x = a + (b - a) * weight
  return x


def invert_affine(matrix: jax.Array) -> jax.Array:
  """The inverse of a [2, 3] affine map (closed form), [2, 3] float32."""
  m = jnp.asarray(matrix, jnp.float32)
  det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
  linear = jnp.array([[m[1, 1], -m[0, 1]], [-m[1, 0], m[0, 0]]]) / det
  return jnp.concatenate([linear, -(linear @ m[:, 2])[:, None]], axis=1)


def phase_correlation_shift(a: jax.Array, b: jax.Array) -> jax.Array:
  """The whole-pixel translation (dx, dy) that best maps `a` onto `b`: b(x, y) ~ a(x - dx, y - dy).

  Phase correlation: the peak of the inverse FFT of the normalised cross-power spectrum of the
  two grey images (mean removed, times a Hann window against the FFT's wrap-around, as
  cv2.phaseCorrelate does); shifts are whole pixels in [-W/2, W/2) x [-H/2, H/2).
  `affine_warp(a, [[1, 0, dx], [0, 1, dy]])` then moves a onto b.

  Args:
    a, b: [H, W, C] float images of one size.

  Returns:
    float32 [2]: (dx, dy).
  """
  h, w = a.shape[:2]
  window = jnp.outer(jnp.hanning(h), jnp.hanning(w))

  def spectrum(image):
    grey = jnp.mean(image.astype(jnp.float32), axis=-1)
    return jnp.fft.fft2((grey - jnp.mean(grey)) * window)

  cross = spectrum(b) * jnp.conj(spectrum(a))
  correlation = jnp.real(jnp.fft.ifft2(cross / jnp.maximum(jnp.abs(cross), 1e-12)))
  dy, dx = jnp.divmod(jnp.argmax(correlation), w)
  dy = jnp.where(dy >= (h + 1) // 2, dy - h, dy)
  dx = jnp.where(dx >= (w + 1) // 2, dx - w, dx)
  return jnp.stack([dx, dy]).astype(jnp.float32)
