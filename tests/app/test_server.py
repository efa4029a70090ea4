"""cpjax.app over HTTP without a browser: routes, status codes, one-line JSON errors, a server that
keeps serving after a failure, and the command line."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import REPO, subprocess_env
from cpjax.app import handlers, server


@pytest.fixture
def served(tmp_path):
  app = handlers.App({}, max_upload_bytes=2000, workspace=tmp_path)
  httpd = server.Server(app, port=0)
  httpd.start()
  yield app, httpd.url
  httpd.shutdown()
  httpd.server_close()
  app.close()


def _call(url: str, data: bytes | None = None, content_type: str = "application/json"):
  """(status, headers, body bytes) of a GET (data None) or POST."""
  request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
  try:
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.status, response.headers, response.read()
  except urllib.error.HTTPError as e:
    return e.code, e.headers, e.read()


def test_page_and_static_files(served):
  _, url = served
  status, headers, body = _call(url)
  assert status == 200 and headers["Content-Type"].startswith("text/html")
  for tab in (b"Paste / clone", b"Segment and clone", b"Harmonize", b"Inpaint video"):
    assert tab in body
  assert _call(url + "static/app.js")[0] == 200
  assert _call(url + "static/app.css")[1]["Content-Type"].startswith("text/css")
  status, _, body = _call(url + "static/..%2Fserver.py")
  assert status == 404 and b"Traceback" not in body
  status, _, body = _call(url + "nowhere")
  assert (status, json.loads(body)) == (404, {"error": "no page /nowhere; open / for the app."})


def test_images_round_trip_as_full_resolution_png(served):
  app, url = served
  status, _, body = _call(url + "api/sample", json.dumps({"name": "chelsea"}).encode())
  held = json.loads(body)
  assert status == 200 and (held["height"], held["width"]) == (300, 451)
  status, headers, png = _call(url + f"api/image/{held['id']}.png?download=1")
  assert status == 200 and headers["Content-Type"] == "image/png"
  assert headers["Content-Disposition"] == 'attachment; filename="chelsea.png"'
  import io  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), skimage.data.chelsea())


def test_bad_requests_get_json_messages_and_the_server_keeps_serving(served, monkeypatch):
  app, url = served
  cases = [
      (url + "api/upload?kind=image&name=big.png", b"x" * 3000, 413,
       "the upload is 0.0 MB but the app takes at most 0 MB"),
      (url + "api/upload?kind=image&name=bad.png", b"x" * 100, 400,
       "bad.png cannot be read as an image"),
      (url + "api/paste", b"{not json", 400, "the request is not JSON"),
      (url + "api/paste", b"[]", 400, "the request must be a JSON object"),
      (url + "api/paste", b"{}", 400, "no source chosen; pick or upload one first."),
      (url + "api/harmonize", b"{}", 400, "start the app with --harmonize=DIR"),
      (url + "api/inpaint", b"{}", 400, "start the app with --video=DIR"),
      (url + "api/image/abcdef.png", None, 404, "no longer holds that image"),
      (url + "api/job/abcdef", None, 400, "no such job"),
  ]
  for address, data, code, message in cases:
    status, _, body = _call(address, data)
    assert status == code, (address, body)
    assert message in json.loads(body)["error"]

  def broken():
    raise RuntimeError("a bug")

  monkeypatch.setattr(app, "info", broken)
  status, _, body = _call(url + "api/info")
  assert status == 500
  assert json.loads(body) == {"error": "internal error (RuntimeError); the server's log has the "
                                       "details."}
  monkeypatch.undo()
  assert _call(url + "api/info")[0] == 200


def test_command_line_serves_and_rejects_a_wrong_directory(tmp_path):
  """`python -m cpjax.app --port=0` prints its address and answers there; a directory without a
  checkpoint is one line and exit status 1 before anything is served."""
  env = subprocess_env()
  process = subprocess.Popen([sys.executable, "-m", "cpjax.app", "--port=0"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = process.stdout.readline()
    assert line.startswith("cpjax.app: serving http://127.0.0.1:"), process.stderr.read()
    address = line.split()[2]
    info = json.loads(_call(address + "api/info")[2])
    assert info["models"]["harmonize"]["enabled"] is False
    assert [m["id"] for m in info["methods"] if m["enabled"]][:2] == ["cut", "poisson_normal"]
  finally:
    process.terminate()
    process.wait(timeout=30)
  run = subprocess.run([sys.executable, "-m", "cpjax.app", f"--harmonize={tmp_path}", "--port=0"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert run.returncode == 1 and run.stdout == ""
  assert run.stderr.strip() == (f"cpjax.app: --harmonize: no checkpoint in {tmp_path}/checkpoints; "
                                f"train one with python -m cpjax.main --config=configs/harmonization_demo.py "
                                f"--workdir={tmp_path}")
