"""cpjax.app end to end in headless Chromium (Debian's `chromium`, driven by Playwright): the page
renders its four tools offline; a mask drawn with the mouse is Poisson-cloned where it is clicked
onto the target; a polygon marks the foreground the tiny trained harmoniser changes.

Skipped, with the reason, where Playwright (`pip install -e ".[app]"`) or Chromium
(`apt-get install chromium`) is missing; `.ci/run` installs both.
"""
from __future__ import annotations

import io
import shutil
import urllib.request

import numpy as np
import pytest
import skimage.data
from PIL import Image

from cpjax.app import handlers, server

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need Playwright: pip install -e '.[app]'")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="the browser tests need Chromium on PATH (Debian: apt-get install "
                             "chromium)")

# Nothing may reach outside the machine: no updates, no sync, no background requests.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def served(harmonize_model, tmp_path_factory):
  """The app with the tiny trained harmoniser (and nothing else) on a free port."""
  app = handlers.App({"harmonize": harmonize_model},
                     workspace=tmp_path_factory.mktemp("browser_app"))
  httpd = server.Server(app, port=0)
  httpd.start()
  yield httpd.url
  httpd.shutdown()
  httpd.server_close()
  app.close()


@pytest.fixture(scope="module")
def browser():
  with sync_api.sync_playwright() as p:
    chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser, served):
  """The app's page, loaded; after the test: no script error, no request off the machine (4xx
  answers are the messages the tests provoke)."""
  context = browser.new_context(viewport={"width": 1280, "height": 1000})
  page = context.new_page()
  errors, outside = [], []
  page.on("pageerror", lambda e: errors.append(str(e)))
  page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith(
      "Failed to load resource: the server responded with a status of 4") else None)  # answers
  page.on("request", lambda r: None if r.url.startswith((served, "data:", "blob:"))
          else outside.append(r.url))
  page.goto(served)
  page.wait_for_selector("body[data-ready=true]", timeout=60_000)
  yield page
  context.close()
  assert not errors and not outside, (errors, outside)


def _png(url: str) -> np.ndarray:
  with urllib.request.urlopen(url, timeout=30) as response:
    return np.asarray(Image.open(io.BytesIO(response.read())))


def _to_image(page, canvas, fx: float, fy: float) -> tuple[float, float, float]:
  """Screen point at fractions (fx, fy) of a canvas, and its image pixel and pixels per CSS px."""
  box = canvas.bounding_box()
  width = page.evaluate("c => c.width", canvas.element_handle())
  scale = width / box["width"]
  return (box["x"] + fx * box["width"], box["y"] + fy * box["height"]), (
      fx * box["width"] * scale, fy * box["height"] * scale), scale


def test_the_page_shows_the_four_tools_offline(page):
  tabs = page.locator("[role=tab]")
  assert tabs.all_inner_texts() == ["Paste / clone", "Segment and clone", "Harmonize",
                                    "Inpaint video"]
  paste = page.locator("#paste")
  assert paste.locator("canvas.editor").is_visible() and paste.locator("canvas.placer").is_visible()
  hint = paste.locator(".hint").inner_text()
  assert "learned copy-paste is off: start the app with --copy_paste=DIR" in hint
  assert paste.locator("input[value=copy_paste]").is_disabled()
  assert paste.locator(".harmonize").is_enabled()          # the harmoniser is loaded
  page.click("#tab-segment")
  assert "start the app with --segment=DIR" in page.locator("#segment .hint").inner_text()
  assert page.locator("#segment .largest").is_disabled()
  page.click("#tab-harmonize")
  assert page.locator("#harmonize .run").is_enabled() and not page.locator("#paste").is_visible()
  page.click("#tab-video")
  video = page.locator("#video")
  page.wait_for_function("document.querySelector('#video .clip-info').textContent !== ''")
  assert video.locator(".clip-info").inner_text() == "bikes.mp4: 250 frames, 272x640"
  assert "start the app with --video=DIR" in video.locator(".hint").inner_text()
  assert video.locator(".run").is_disabled()


def test_poisson_clone_of_a_drawn_mask(page, served):
  """Draw a stroke on the cat, click on the astronaut, run: the cut-and-paste holds the cat's
  pixels of the drawn mask, moved so that the stroke's box is centred on the click; Poisson
  cloning changes the image inside the region and equals the target outside the region's box."""
  paste = page.locator("#paste")
  paste.locator(".run").click()
  assert paste.locator(".error").inner_text() == ("no region drawn on the source; paint it with "
                                                  "the brush or draw a polygon.")
  editor, placer = paste.locator("canvas.editor"), paste.locator("canvas.placer")
  (ax, ay), a, scale = _to_image(page, editor, 0.3, 0.4)
  (bx, by), b, _ = _to_image(page, editor, 0.6, 0.5)
  radius = 8 * scale                                           # the brush: 16 CSS px wide
  page.mouse.move(ax, ay)
  page.mouse.down()
  page.mouse.move(bx, by, steps=12)
  page.mouse.up()
  (cx, cy), click, _ = _to_image(page, placer, 0.5, 0.45)
  page.mouse.click(cx, cy)
  with page.expect_response("**/api/upload?kind=mask*") as drawn, \
       page.expect_response("**/api/paste") as pasted:
    paste.locator(".run").click()
  page.wait_for_selector("#paste .result[data-method=poisson_normal] img")
  out = pasted.value.json()
  assert [r["method"] for r in out["results"]] == ["cut", "poisson_normal"]

  source, target = skimage.data.chelsea(), skimage.data.astronaut()
  mask = _png(served + f"api/image/{drawn.value.json()['id']}.png") > 0
  placed = _png(served + f"api/image/{out['mask']['id']}.png") > 0
  ys, xs = np.nonzero(mask)
  # The stroke's box: the segment from a to b widened by the brush radius (2 px of rounding).
  assert abs(xs.min() - (a[0] - radius)) <= 2 and abs(xs.max() - (b[0] + radius)) <= 2
  assert abs(ys.min() - (a[1] - radius)) <= 2 and abs(ys.max() - (b[1] + radius)) <= 2
  py, px = np.nonzero(placed)
  assert abs((px.min() + px.max()) / 2 - click[0]) <= 2
  assert abs((py.min() + py.max()) / 2 - click[1]) <= 2
  dy, dx = py.min() - ys.min(), px.min() - xs.min()
  np.testing.assert_array_equal(placed[ys + dy, xs + dx], True)
  assert placed.sum() == mask.sum()

  cut = _png(served + f"api/image/{out['results'][0]['id']}.png")
  np.testing.assert_array_equal(cut[ys + dy, xs + dx], source[ys, xs])
  np.testing.assert_array_equal(cut[~placed], target[~placed])
  link = page.locator("#paste .result[data-method=poisson_normal] a")
  assert link.get_attribute("href").endswith("?download=1")
  cloned = _png(served + link.get_attribute("href").lstrip("/"))
  assert cloned.shape == target.shape                        # full resolution
  outside = np.ones(target.shape[:2], bool)
  outside[py.min() - 1:py.max() + 2, px.min() - 1:px.max() + 2] = False
  np.testing.assert_array_equal(cloned[outside], target[outside])
  assert np.abs(cloned[placed].astype(int) - target[placed]).mean() > 5

  (ex, ey), _, _ = _to_image(page, placer, 0.99, 0.99)
  page.mouse.click(ex, ey)
  paste.locator(".run").click()
  page.wait_for_selector("#paste .error:not([hidden])")
  assert "falls off the target (512x512)" in paste.locator(".error").inner_text()


def test_harmonize_a_polygon(page, served):
  """A polygon on the bundled composite (coffee): the harmonised image keeps every pixel outside
  the polygon's mask and changes the inside."""
  page.click("#tab-harmonize")
  section = page.locator("#harmonize")
  section.locator("input[value=polygon]").check()
  editor = section.locator("canvas.editor")
  for fx, fy in [(0.3, 0.3), (0.65, 0.35), (0.6, 0.7), (0.35, 0.65), (0.3, 0.3)]:
    page.mouse.click(*_to_image(page, editor, fx, fy)[0])
  with page.expect_response("**/api/upload?kind=mask*") as drawn, \
       page.expect_response("**/api/harmonize") as harmonized:
    section.locator(".run").click()
  page.wait_for_selector("#harmonize .result[data-method=harmonized] img")
  mask = _png(served + f"api/image/{drawn.value.json()['id']}.png") > 0
  before, after = (_png(served + f"api/image/{r['id']}.png")
                   for r in harmonized.value.json()["results"])
  composite = skimage.data.coffee()
  np.testing.assert_array_equal(before, composite)
  assert 0.05 < mask.mean() < 0.2                            # the polygon's area, roughly
  np.testing.assert_array_equal(after[~mask], composite[~mask])
  assert np.abs(after[mask].astype(int) - composite[mask]).mean() > 0.5
