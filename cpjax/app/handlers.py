"""What the app's page asks for, without HTTP: images held by id, paste / clone, segment,
harmonize. `cpjax.app.server` maps requests to these methods; tests call them directly.

Images live on the server, each under a short id: the page uploads a file (or picks a bundled
photo) once, gets its id and size, shows the decoded pixels (`png`), and names images by id in
every later request, so that what the page draws on is exactly what the methods receive.
Images are float32 [H, W, 3] in [0, 1], masks [H, W, 1] in {0, 1}, as in `cpjax.tools`; uploads
are decoded and checked by `cpjax.tools.common.read_image` / `read_mask`.

Placement (paste / clone). The page sends the region as a mask the size of the source, and where
its bounding box goes on the target: the top-left corner (x, y) in target pixels and a scale.
At scale 1 the source moves by (x - x0, y - y0), (x0, y0) being the box's corner in the source.
Otherwise the box with a 2-px margin (the Poisson guidance reads one pixel of source around the
region) is cut out and resized by the scale, the image with OpenCV's area filter when shrinking
and bilinear when enlarging, the mask bilinearly and thresholded at 0.5. Every method then runs in
the target's frame: the source placed on a copy of the target (`cpjax.tools.paste.place`) and the
region's mask on a blank canvas, offset (0, 0), so a tool's jitted function is compiled once per
target size (and, for Poisson, per region size) and dragging the region to another place reuses
it. The placed region must keep off the target's 1-px border, which Poisson cloning holds fixed.

Errors the user can fix raise `ToolError` with one line saying what to do; the server sends it to
the page as a message.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import pathlib
import re
import secrets
import tempfile
import threading
import time
from typing import Any

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from cpjax.app import jobs, models
from cpjax.ops import poisson
from cpjax.tools import clone, common, paste
from cpjax.tools import harmonize as harmonize_tool
from cpjax.tools.common import ToolError

# The photos bundled with scikit-image that the page offers (skimage.data.<name>).
SAMPLES = ("astronaut", "chelsea", "coffee", "rocket")
MARGIN = 2               # px of source kept around a region that is rescaled
SCALES = (0.05, 8.0)     # the scales the page may ask for
HELD_IMAGES = 64         # images the server keeps (uploads, results); older ones are dropped


class TooLarge(ToolError):
  """An upload over the size limit (HTTP 413)."""


class NotFound(ToolError):
  """An id the server does not hold (HTTP 404)."""


@dataclasses.dataclass
class Held:
  pixels: np.ndarray   # [H, W, 3] image or [H, W, 1] mask, float32 in [0, 1]
  name: str            # what messages and downloads call it


def png_bytes(pixels: np.ndarray) -> bytes:
  """[H, W, 3] or [H, W, 1] in [0, 1] -> 8-bit PNG (clipped, rounded), as `common.write_image`."""
  values = np.round(np.clip(np.nan_to_num(pixels), 0.0, 1.0) * 255.0).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(values[..., 0] if values.shape[-1] == 1 else values).save(
      buffer, format="PNG", compress_level=3)
  return buffer.getvalue()


def safe_name(name: str, default: str = "upload") -> str:
  """A file name without folders or odd characters (for temporary files and messages)."""
  base = re.sub(r"[^A-Za-z0-9._-]+", "_", pathlib.PurePath(name or "").name).strip("._")
  return base[:80] or default


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
  """(y0, y1, x0, x1), inclusive, of the nonzero pixels of a [H, W, 1] mask (not empty)."""
  rows = np.flatnonzero(mask[..., 0].any(1))
  cols = np.flatnonzero(mask[..., 0].any(0))
  return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """[h, w, C] float32 -> [H, W, C]: OpenCV area filter to shrink, bilinear to enlarge."""
  h, w = size
  shrink = h * w < pixels.shape[0] * pixels.shape[1]
  out = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
  return out.reshape(h, w, pixels.shape[-1])


def scaled_region(source: np.ndarray, mask: np.ndarray, x: int, y: int, scale: float
                  ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
  """The source and mask to place, and their offset (DX, DY) on the target (module docstring).

  Args:
    source: [Hs, Ws, 3]; mask: [Hs, Ws, 1] in {0, 1}, not empty.
    x, y: where the region's bounding box goes on the target (its top-left pixel).
    scale: the region's size on the target over its size in the source.

  Returns:
    (source', mask', offset): source' [h, w, 3] and mask' [h, w, 1] (the inputs themselves at
    scale 1) and the offset that moves them onto the target.
  """
  y0, y1, x0, x1 = bounding_box(mask)
  if scale == 1.0:
    return source, mask, (x - x0, y - y0)
  top, left = min(MARGIN, y0), min(MARGIN, x0)
  crop = np.s_[y0 - top:y1 + 1 + MARGIN, x0 - left:x1 + 1 + MARGIN]
  h, w = source[crop].shape[:2]
  size = (max(1, round(h * scale)), max(1, round(w * scale)))
  small_mask = (_resize(mask[crop], size) >= 0.5).astype(np.float32)
  if not small_mask.any():
    raise ToolError(f"at scale {scale:g} the region vanishes (under one pixel); use a larger "
                    "scale.")
  return _resize(source[crop], size), small_mask, (x - round(left * scale), y - round(top * scale))


def check_on_target(mask: np.ndarray, offset: tuple[int, int], target_shape: tuple[int, ...],
                    scale: float) -> None:
  """The moved region must lie on the target, off its 1-px border.

  Raises:
    ToolError: naming the region's size and the corners that work.
  """
  y0, y1, x0, x1 = bounding_box(mask)
  h, w = y1 - y0 + 1, x1 - x0 + 1
  ht, wt = target_shape[:2]
  if h > ht - 2 or w > wt - 2:
    raise ToolError(f"the region is {h}x{w} at scale {scale:g} but the target is only {ht}x{wt} "
                    "(less its 1-px border); make the region smaller (scale) or pick a larger "
                    "target.")
  left, top = x0 + offset[0], y0 + offset[1]
  if not (1 <= left <= wt - 1 - w and 1 <= top <= ht - 1 - h):
    raise ToolError(f"the region ({h}x{w}) at x={left}, y={top} falls off the target ({ht}x{wt}) "
                    f"or onto its 1-px border; drag it inside: x in [1, {wt - 1 - w}], y in "
                    f"[1, {ht - 1 - h}].")


def available_methods(loaded: dict[str, models.Model]) -> list[dict[str, Any]]:
  """The paste / clone methods the page offers: id, label, and why it is off (if it is)."""
  out = [{"id": "cut", "label": "cut-and-paste", "enabled": True}]
  out += [{"id": f"poisson_{mode}", "label": f"Poisson {mode}", "enabled": True}
          for mode in poisson.MODES]
  out.append({"id": "copy_paste", "label": "learned copy-paste",
              "enabled": "copy_paste" in loaded,
              "hint": "" if "copy_paste" in loaded else models.how_to_enable("copy_paste")})
  return out


class App:
  """The app's state: the loaded systems and the images held by id.

  Args:
    loaded: kind -> `models.Model` (kinds that were not given are absent).
    max_upload_bytes: the largest upload accepted.
    max_pixels: the largest image (height x width) accepted.
    workspace: a folder for temporary files (videos); None: a new temporary folder.
  """

  def __init__(self, loaded: dict[str, models.Model], *, max_upload_bytes: int = 50 << 20,
               max_pixels: int = 25_000_000, workspace: str | pathlib.Path | None = None):
    self.models = dict(loaded)
    self.max_upload_bytes = max_upload_bytes
    self.max_pixels = max_pixels
    self._held: collections.OrderedDict[str, Held] = collections.OrderedDict()
    self._lock = threading.Lock()
    self._tmp = None if workspace else tempfile.TemporaryDirectory(prefix="cpjax_app_")
    self.workspace = pathlib.Path(workspace or self._tmp.name)
    self.videos = jobs.Videos(self)

  def close(self) -> None:
    self.videos.close()
    if self._tmp is not None:
      self._tmp.cleanup()

  # Images held by id.

  def hold(self, pixels: np.ndarray, name: str) -> dict[str, Any]:
    """Keeps an image or mask; returns {'id', 'name', 'height', 'width'}."""
    image_id = secrets.token_hex(6)
    with self._lock:
      self._held[image_id] = Held(np.asarray(pixels, np.float32), name)
      while len(self._held) > HELD_IMAGES:
        self._held.popitem(last=False)
    return {"id": image_id, "name": name, "height": int(pixels.shape[0]),
            "width": int(pixels.shape[1])}

  def held(self, image_id: Any, what: str = "image") -> Held:
    if image_id is None:
      raise ToolError(f"no {what} chosen; pick or upload one first.")
    with self._lock:
      found = self._held.get(str(image_id))
      if found is not None:
        self._held.move_to_end(str(image_id))
    if found is None:
      raise NotFound(f"the server no longer holds that {what} (it keeps the last {HELD_IMAGES}); "
                     "pick or upload it again.")
    return found

  def png(self, image_id: str) -> tuple[bytes, str]:
    """(PNG bytes at full resolution, a download name) of a held image."""
    held = self.held(image_id)
    return png_bytes(held.pixels), f"{pathlib.PurePath(held.name).stem}.png"

  def check_size(self, length: int) -> None:
    if length > self.max_upload_bytes:
      raise TooLarge(f"the upload is {length / 2**20:.1f} MB but the app takes at most "
                     f"{self.max_upload_bytes / 2**20:.0f} MB; use a smaller file (or start the "
                     "app with a larger --max_upload_mb).")

  def _check_pixels(self, pixels: np.ndarray, name: str) -> None:
    h, w = pixels.shape[:2]
    if h * w > self.max_pixels:
      raise TooLarge(f"{name} is {h}x{w} ({h * w / 1e6:.1f} megapixels) but the app takes at most "
                     f"{self.max_pixels / 1e6:.0f}; resize it first.")

  def upload(self, data: bytes, name: str, kind: str = "image") -> dict[str, Any]:
    """Decodes an uploaded image ('image') or black/white mask ('mask') and holds it."""
    if kind not in ("image", "mask"):
      raise ToolError(f"kind={kind!r}; upload an 'image' or a 'mask'.")
    self.check_size(len(data))
    name = safe_name(name, kind)
    if not data:
      raise ToolError(f"{name} is empty (0 bytes); pick another file.")
    with tempfile.TemporaryDirectory(dir=self.workspace) as folder:
      path = pathlib.Path(folder) / name
      path.write_bytes(data)
      try:
        pixels = common.read_image(path) if kind == "image" else common.read_mask(path)
      except ToolError as e:
        raise ToolError(str(e).replace(str(path), name)) from None
    self._check_pixels(pixels, name)
    return self.hold(pixels, name)

  def sample(self, name: str) -> dict[str, Any]:
    """Holds a photo bundled with scikit-image (one of SAMPLES)."""
    if name not in SAMPLES:
      raise ToolError(f"no sample photo {name!r}; pick one of {', '.join(SAMPLES)}.")
    import skimage.data  # pylint: disable=g-import-not-at-top
    pixels = getattr(skimage.data, name)().astype(np.float32) / 255.0
    return self.hold(pixels, f"{name}.png")

  # The page's start-up information.

  def info(self) -> dict[str, Any]:
    """Samples, limits, and for every tool whether it is on and how to turn it on."""
    segment = self.models.get("segment")
    return {
        "samples": list(SAMPLES),
        "videos": list(self.videos.BUNDLED),
        "max_upload_bytes": self.max_upload_bytes,
        "methods": available_methods(self.models),
        "domains": list(poisson.DOMAINS),
        "models": {kind: {"enabled": kind in self.models,
                          "directory": self.models[kind].directory if kind in self.models else "",
                          "hint": "" if kind in self.models else models.how_to_enable(kind)}
                   for kind in models.KINDS},
        "classes": [c for c in segment.task.classes if c != "background"] if segment else [],
    }

  # Paste / clone.

  def _model(self, kind: str) -> models.Model:
    if kind not in self.models:
      raise ToolError(f"this needs a {models.KINDS[kind].task} model; "
                      + models.how_to_enable(kind))
    return self.models[kind]

  def place(self, source_id: str | None, target_id: str | None, mask_id: str | None,
            x: int | None, y: int | None, scale: float = 1.0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target, placed source, placed mask), all in the target's frame (module docstring)."""
    source, target = self.held(source_id, "source").pixels, self.held(target_id, "target").pixels
    if mask_id is None:
      raise ToolError("no region drawn on the source; paint it with the brush or draw a polygon.")
    mask = self.held(mask_id, "mask").pixels
    if x is None or y is None:
      raise ToolError("the region has no place on the target yet; click or drag on the target.")
    if mask.shape[-1] != 1 or source.shape[-1] != 3 or target.shape[-1] != 3:
      raise ToolError("give an image as source and target and a mask as the region.")
    if mask.shape[:2] != source.shape[:2]:
      raise ToolError(f"the mask is {mask.shape[0]}x{mask.shape[1]} but the source is "
                      f"{source.shape[0]}x{source.shape[1]}; draw the region on the source.")
    if not mask.any():
      raise ToolError("no region drawn on the source; paint it with the brush or draw a polygon.")
    if not SCALES[0] <= scale <= SCALES[1]:
      raise ToolError(f"scale {scale:g}; use a scale in [{SCALES[0]}, {SCALES[1]}].")
    region, region_mask, offset = scaled_region(source, mask, int(x), int(y), float(scale))
    check_on_target(region_mask, offset, target.shape, scale)
    shape = target.shape[:2]
    return (target, paste.place(region, shape, offset, fill=target),
            paste.place(region_mask, shape, offset))

  def paste(self, source: str | None = None, target: str | None = None, mask: str | None = None,
            x: int | None = None, y: int | None = None, scale: float = 1.0,
            methods: list[str] | tuple[str, ...] = ("cut",), domain: str = "box",
            harmonize: bool = False, seed: int = 0) -> dict[str, Any]:
    """Runs the chosen methods on one placement; cut-and-paste always comes first.

    Returns:
      {'results': [{'method', 'label', 'seconds', and the held result's 'id', 'name', 'height',
      'width'}], 'mask': the held placed mask, 'composite': the held cut-and-paste}. With
      `harmonize`, every result is followed by its harmonised version.
    """
    chosen = ["cut"] + [m for m in dict.fromkeys(methods) if m != "cut"]
    known = {m["id"]: m for m in available_methods(self.models)}
    for method in chosen:
      if method not in known:
        raise ToolError(f"no method {method!r}; choose from {', '.join(known)}.")
      if not known[method]["enabled"]:
        raise ToolError(f"{known[method]['label']} needs a model; {known[method]['hint']}")
    if domain not in poisson.DOMAINS:
      raise ToolError(f"domain {domain!r}; use one of {', '.join(poisson.DOMAINS)}.")
    harmonizer = self._model("harmonize") if harmonize else None
    target_pixels, placed, placed_mask = self.place(source, target, mask, x, y, scale)
    results = []
    for method in chosen:
      start = time.perf_counter()
      if method == "cut":
        image = placed * placed_mask + target_pixels * (1.0 - placed_mask)
      elif method == "copy_paste":
        m = self.models["copy_paste"]
        image = paste.paste(m.task, m.state, placed, target_pixels, placed_mask, (0, 0), seed)
      else:
        image = clone.clone(placed, target_pixels, placed_mask, (0, 0),
                            method[len("poisson_"):], domain)
      label = known[method]["label"] + (f" ({domain})" if method.startswith("poisson") else "")
      results.append(self._result(image, method, label, start))
      if harmonizer is not None:
        start = time.perf_counter()
        image = harmonize_tool.harmonize(harmonizer.task, harmonizer.state, image, placed_mask)
        results.append(self._result(image, f"{method}+harmonize",
                                    f"{label} + {harmonizer.config.model.name}", start))
    return {"results": results, "mask": self.hold(placed_mask, "placed-mask.png"),
            "composite": {k: results[0][k] for k in ("id", "name", "height", "width")}}

  def _result(self, image: np.ndarray, method: str, label: str, start: float) -> dict[str, Any]:
    held = self.hold(np.asarray(image, np.float32), f"{safe_name(method)}.png")
    return {**held, "method": method, "label": label,
            "seconds": round(time.perf_counter() - start, 3)}

  # Segment.

  def segment(self, image: str | None = None, x: int | None = None, y: int | None = None,
              class_name: str | None = None, dilation: int = 3) -> dict[str, Any]:
    """A mask from the FCN: the object under (x, y), the largest region of `class_name`, or
    (neither given) the largest region of any class; cleaned by `cpjax.tools.clone.clean_mask`
    (8-connected component, dilated by a disk of `dilation` px).

    Returns:
      The held mask ({'id', ...}) with 'class' (the object's class) and 'pixels' (its area).
    """
    m = self._model("segment")
    if not 0 <= int(dilation) <= 50:
      raise ToolError(f"dilation {dilation}; give a radius in pixels in [0, 50].")
    held = self.held(image, "source")
    pixels = held.pixels
    # pylint: disable-next=protected-access
    labels = np.asarray(clone._predict(m.task, m.state.params, pixels))
    classes = list(m.task.classes)
    objects = [c for c in np.unique(labels) if classes[c] != "background"]
    found = ", ".join(classes[c] for c in objects) or "nothing but background"
    if x is not None and y is not None:
      x, y = int(x), int(y)
      if not (0 <= y < labels.shape[0] and 0 <= x < labels.shape[1]):
        raise ToolError(f"({x}, {y}) is outside {held.name}; click on the image.")
      label = int(labels[y, x])
      if label not in objects:
        raise ToolError(f"the FCN labels that pixel background; click on an object (it finds: "
                        f"{found}).")
      components, _ = ndimage.label(labels == label, structure=np.ones((3, 3)))
      region = components == components[y, x]
    elif class_name:
      if class_name not in classes:
        raise ToolError(f"{class_name!r} is not a class of the FCN; use one of: "
                        f"{', '.join(c for c in classes if c != 'background')}.")
      label = classes.index(class_name)
      if label not in objects:
        raise ToolError(f"the FCN finds no {class_name} in {held.name} (it finds: {found}); "
                        "draw the region or pick another class.")
      region = labels == label
    else:
      if not objects:
        raise ToolError(f"the FCN finds no object in {held.name}; draw the region instead.")
      sizes = {c: clone.clean_mask(labels == c, 0).sum() for c in objects}
      label = max(sizes, key=sizes.get)
      region = labels == label
    mask = clone.clean_mask(region, int(dilation))
    return {**self.hold(mask, f"{classes[label]}-mask.png"), "class": classes[label],
            "pixels": int(mask.sum())}

  # Harmonize.

  def harmonize(self, composite: str | None = None, mask: str | None = None) -> dict[str, Any]:
    """Harmonises a held composite inside a held mask; returns the before / after pair."""
    m = self._model("harmonize")
    image = self.held(composite, "composite")
    if mask is None:
      raise ToolError("no foreground marked; paint the pasted region with the brush or draw a "
                      "polygon.")
    region = self.held(mask, "mask").pixels
    if region.shape[-1] != 1:
      raise ToolError("give a black/white mask for the foreground, not a photo.")
    if region.shape[:2] != image.pixels.shape[:2]:
      raise ToolError(f"the mask is {region.shape[0]}x{region.shape[1]} but the composite is "
                      f"{image.pixels.shape[0]}x{image.pixels.shape[1]}; draw it on the "
                      "composite or upload one of that size.")
    if not region.any():
      raise ToolError("no foreground marked; paint the pasted region with the brush or draw a "
                      "polygon.")
    start = time.perf_counter()
    out = harmonize_tool.harmonize(m.task, m.state, image.pixels, region)
    after = self._result(out, "harmonized", f"harmonized ({m.config.model.name})", start)
    return {"results": [{**self.hold(image.pixels, image.name), "method": "composite",
                         "label": "composite", "seconds": 0.0}, after]}
