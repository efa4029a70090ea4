"""Host-side uint8 image operations for the data pipelines (PIL, OpenCV, NumPy; one job each).

Every function takes and returns uint8 arrays [H, W, 3] (RGB), the format the pipelines hand to
the device; conversion to float32 [0, 1] happens on the device. Sizes are (height, width); an
int size means a square (`pair` turns either form into (height, width), `parse_pair` the text
'HxW' of a command line).

- `decode_image`: encoded bytes (PNG, JPEG, WebP, ...) -> RGB, with EXIF orientation applied;
  `read_image` the same from a file.
- `to_rgb`: any 2-D / 3-D image array (gray, gray + alpha, RGB, RGBA; uint8, uint16, bool or
  float in [0, 1]) -> uint8 RGB. Alpha is dropped (transparent pixels keep their stored colour).
- `alpha_matte`: the alpha channel of a PIL image when it varies: the region of a mask exported
  as a cut-out (the tools' and the video masks' readers use it).
- `resize`: to an exact size, antialiased bicubic (PIL); `resize_linear`: bilinear without
  antialiasing (OpenCV), as albumentations resizes.
- `resized_shape`: the size that the `resize` field of a data config asks for: None (keep), an
  int (shorter side to that size, aspect kept) or (h, w) (exact).
- `crop` (a window), `flip_left_right`.

Aligned fields (`data_pipelines.sources.FIELD_KINDS`): masks (uint8 [H, W, 1]) and label maps
(uint8 [H, W]) travel with their image; `resize_field` and `pad_field` treat each kind the way
its values need (bilinear for masks, nearest for class ids, ignore-label padding), and
`covering_shape`, `random_resized_crop_box` compute one geometry for all the fields.
"""
from __future__ import annotations

import io
import math
import re
from typing import Any, Sequence, Union

import cv2
import numpy as np
from PIL import Image, ImageOps

Size = Union[int, Sequence[int]]

# Resampling filter for every resize: PIL's bicubic is antialiased when downscaling.
_RESAMPLE = Image.Resampling.BICUBIC


class DecodeError(ValueError):
  """An image that cannot be read or decoded; `path` names it."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"cannot decode image {path}: {reason}; remove or replace the file")
    self.path = path
    self.reason = reason

  def __reduce__(self):  # picklable, so errors from grain worker processes arrive intact
    return type(self), (self.path, self.reason)


def pair(size: Size) -> tuple[int, int]:
  """(height, width) from an int (square) or a (h, w) pair, checked to be positive."""
  if isinstance(size, (int, np.integer)):
    h = w = int(size)
  else:
    if len(size) != 2:
      raise ValueError(f"image size {size!r} must be an int or (height, width)")
    h, w = int(size[0]), int(size[1])
  if h <= 0 or w <= 0:
    raise ValueError(f"image size {size!r} must be positive")
  return h, w


def parse_pair(text: str) -> tuple[int, int]:
  """'HxW' or 'H,W' (e.g. '240x424') -> (height, width), checked by `pair`.

  Raises:
    ValueError: text of another form, or a side of 0 (one line naming the text).
  """
  match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
  if match is None:
    raise ValueError(f"size {text!r} is not HxW; give e.g. 240x424")
  return pair((int(match.group(1)), int(match.group(2))))


def to_rgb(image: np.ndarray, path: str = "<array>") -> np.ndarray:
  """Any image array -> uint8 [H, W, 3].

  Args:
    image: [H, W], [H, W, 1], [H, W, 2] (gray + alpha), [H, W, 3] or [H, W, 4] (RGBA); uint8,
      uint16 (scaled by 1/257), bool, or float in [0, 1].
    path: named in the error for an unsupported array.

  Returns:
    uint8 [H, W, 3]; gray is repeated over the channels, alpha is dropped.
  """
  x = np.asarray(image)
  if x.ndim == 2:
    x = x[:, :, None]
  if x.ndim != 3 or x.shape[-1] not in (1, 2, 3, 4) or x.shape[0] == 0 or x.shape[1] == 0:
    raise DecodeError(path, f"unsupported image array shape {x.shape}")
  if x.shape[-1] in (2, 4):  # drop alpha
    x = x[:, :, :-1]
  if x.dtype == np.uint8:
    pass
  elif x.dtype == np.bool_:
    x = x.astype(np.uint8) * 255
  elif x.dtype == np.uint16:
    x = ((x.astype(np.uint32) + 128) // 257).astype(np.uint8)
  elif np.issubdtype(x.dtype, np.floating):
    x = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
  else:
    raise DecodeError(path, f"unsupported image dtype {x.dtype}")
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return np.ascontiguousarray(x)


def alpha_matte(image: Image.Image) -> Image.Image | None:
  """The alpha channel of `image` as an 'L' image when it is not constant, else None.

  Image editors export a cut-out as RGBA whose alpha holds the region (opaque) and whose colour
  channels may be anything (often white everywhere); read as colours, such a mask is blank. A
  constant alpha (an opaque RGBA file) says nothing, and palette images keep their indices
  (their transparency is a colour of the palette).
  """
  if "A" not in image.getbands():
    return None
  alpha = image.getchannel("A")
  low, high = alpha.getextrema()
  return alpha.convert("L") if low != high else None


def read_bytes(path: str) -> bytes:
  """The contents of a file; `DecodeError` naming it when it cannot be read."""
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise DecodeError(path, e.strerror or str(e)) from e


def read_image(path: str) -> np.ndarray:
  """The image file at `path` -> uint8 [H, W, 3] RGB (`decode_image`).

  Raises:
    DecodeError: the file cannot be opened or decoded (the message names it).
  """
  return decode_image(read_bytes(path), path)


def decode_image(data: bytes, path: str = "<bytes>") -> np.ndarray:
  """Encoded image bytes -> uint8 [H, W, 3] RGB.

  Grayscale, palette, 16-bit and RGBA/LA images are converted (alpha dropped); the EXIF
  orientation tag is applied, so photos come out upright.

  Raises:
    DecodeError: the bytes are not a readable image (the message names `path`).
  """
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      img = ImageOps.exif_transpose(img)
      if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img).astype(np.uint16 if img.mode != "I" else np.int64)
        if array.dtype == np.int64:  # 32-bit integer PNGs hold 16-bit data in practice
          array = np.clip(array, 0, 65535).astype(np.uint16)
        return to_rgb(array, path)
      if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
      if img.mode != "RGB":
        img = img.convert("RGB")
      return np.asarray(img, dtype=np.uint8).copy()
  except DecodeError:
    raise
  except Image.UnidentifiedImageError as e:
    raise DecodeError(path, "not an image in a format PIL can read") from e
  except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DecodeError(path, reason) from e


def resize(image: np.ndarray, size: Size) -> np.ndarray:
  """Resize uint8 [H, W, 3] to exactly `size` (antialiased bicubic); a no-op at the same size."""
  h, w = pair(size)
  if image.shape[:2] == (h, w):
    return image
  return np.asarray(Image.fromarray(image).resize((w, h), resample=_RESAMPLE), dtype=np.uint8)


def resized_shape(height: int, width: int, spec: Size | None) -> tuple[int, int]:
  """The (h, w) that a data config's `resize` field asks for.

  Args:
    height, width: the image size.
    spec: None (keep the size), an int (shorter side to `spec`, aspect kept, the longer side
      rounded) or (h, w) (exact).
  """
  if spec is None:
    return height, width
  if isinstance(spec, (int, np.integer)):
    s = int(spec)
    if s <= 0:
      raise ValueError(f"resize {spec!r} must be positive")
    if height <= width:
      return s, max(1, round(width * s / height))
    return max(1, round(height * s / width)), s
  return pair(spec)


def covering_shape(height: int, width: int, size: Size) -> tuple[int, int]:
  """The smallest (h', w') >= (height, width) scaled, aspect kept, that covers `size` = (h, w).

  The scale is max(h / height, w / width) when the image is smaller than `size` in either
  dimension (for a square crop: the shorter side becomes the crop size); otherwise the shape
  is unchanged (never downscales).
  """
  h, w = pair(size)
  if height >= h and width >= w:
    return height, width
  scale = max(h / height, w / width)
  return max(h, math.ceil(height * scale - 1e-6)), max(w, math.ceil(width * scale - 1e-6))


def crop(image: np.ndarray, top: int, left: int, size: Size) -> np.ndarray:
  """The window of `size` = (h, w) at (top, left) of [H, W, C]."""
  h, w = pair(size)
  if image.shape[0] < h or image.shape[1] < w:
    raise ValueError(f"image of size {image.shape[:2]} is smaller than the crop ({h}, {w}); "
                     "resize it to covering_shape first")
  if not (0 <= top <= image.shape[0] - h and 0 <= left <= image.shape[1] - w):
    raise ValueError(f"crop at ({top}, {left}) of size ({h}, {w}) leaves the image "
                     f"{image.shape[:2]}")
  return image[top:top + h, left:left + w]


def flip_left_right(image: np.ndarray) -> np.ndarray:
  """Mirror [H, W, C] horizontally (contiguous copy)."""
  return np.ascontiguousarray(image[:, ::-1])


_FIELD_RESAMPLE = {"image": _RESAMPLE, "mask": Image.Resampling.BILINEAR,
                   "label": Image.Resampling.NEAREST}
_FIELD_FILL = {"image": 0, "mask": 0, "label": 255}


RESAMPLES = ("antialias", "linear")


def resize_linear(array: np.ndarray, size: Size) -> np.ndarray:
  """Bilinear resize without antialiasing: cv2.resize(..., INTER_LINEAR).

  Half-pixel centres: output pixel i samples input coordinate (i + 0.5) * in / out - 0.5,
  clamped to the image (OpenCV's fixed-point weights, so within one level of the exact
  formula). This is what albumentations' Resize (and hence the iHarmony4 reference's 256x256
  evaluation) does.

  Args:
    array: uint8 [H, W] or [H, W, C].
    size: (h, w) or an int.

  Returns:
    uint8 of shape (h, w) + array.shape[2:]; the input itself when the size already matches.
  """
  h, w = pair(size)
  if array.shape[:2] == (h, w):
    return array
  out = cv2.resize(array, (w, h), interpolation=cv2.INTER_LINEAR)
  return out.reshape((h, w) + array.shape[2:])   # OpenCV drops a trailing channel axis of 1


def resize_field(array: np.ndarray, size: Size, kind: str, resample: str = "antialias"
                 ) -> np.ndarray:
  """Resize an aligned field to exactly `size` = (h, w) the way its kind needs.

  Args:
    array: 'image' uint8 [H, W, 3]; 'mask' uint8 [H, W, 1] in 0..255; 'label' uint8 [H, W]
      class ids.
    size: (h, w) or an int (square).
    kind: 'image' (antialiased bicubic), 'mask' (bilinear: soft edges stay in 0..255) or
      'label' (nearest: no invented class ids).
    resample: 'antialias' (the filters above) or 'linear' (`resize_linear` for images and
      masks, as OpenCV / albumentations resize; labels stay nearest).

  Returns:
    The same dtype and channel layout at (h, w); the input itself when the size already matches.
  """
  if resample not in RESAMPLES:
    raise ValueError(f"resample is {resample!r}; use one of {', '.join(RESAMPLES)}")
  if resample == "linear" and kind != "label":
    return resize_linear(array, size)
  if kind == "image":
    return resize(array, size)
  h, w = pair(size)
  if array.shape[:2] == (h, w):
    return array
  plane = array[..., 0] if kind == "mask" else array
  out = np.asarray(Image.fromarray(plane).resize((w, h), resample=_FIELD_RESAMPLE[kind]),
                   dtype=np.uint8)
  return out[..., None] if kind == "mask" else out


def pad_field(array: np.ndarray, size: Size, kind: str, path: str = "<array>",
              setting: str = "data.image_size", otherwise: str = "use eval.mode='resize'",
              fill: Any = None) -> np.ndarray:
  """Pad a field at the bottom and right up to `size` with its kind's fill (labels: 255).

  Args:
    fill: the padding value instead of the kind's: a scalar, or one value per channel (e.g. an
      RGB colour for an image).

  Raises:
    ValueError: the field is larger than `size` (names `path`, the config `setting` to raise,
      and the `otherwise` alternative).
  """
  h, w = pair(size)
  height, width = array.shape[:2]
  if height > h or width > w:
    raise ValueError(f"{path} is {height}x{width}, larger than the padded size {h}x{w}; raise "
                     f"{setting} to at least ({height}, {width}) or {otherwise}")
  out = np.empty((h, w) + array.shape[2:], array.dtype)
  out[...] = np.asarray(_FIELD_FILL[kind] if fill is None else fill, array.dtype)
  out[:height, :width] = array
  return out


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float],
                            ratio: tuple[float, float], rng: np.random.Generator
                            ) -> tuple[int, int, int, int]:
  """A crop box (top, left, h, w) drawn like torchvision's / albumentations' RandomResizedCrop.

  Up to 10 tries: area fraction ~ U(scale), log aspect (w / h) ~ U(log ratio); the first box
  that fits is placed uniformly. Otherwise the central box with the aspect clamped to `ratio`.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w
