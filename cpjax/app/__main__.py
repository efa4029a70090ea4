r"""Serves the compositing app on a local web page.

  python -m cpjax.app [--port=7860] [--host=127.0.0.1] [--copy_paste=DIR] [--harmonize=DIR] \
      [--video=DIR] [--segment=DIR] [--max_upload_mb=50] [--verbose]

Each DIR is a training run's --workdir or a directory of converted released weights, as the
tools take (`cpjax.app.models`); each is loaded once, before the server starts, so a wrong
directory is one line and exit status 1. Without any, the page opens on scikit-image's bundled
photos with everything that needs no weights (cut-and-paste, Poisson cloning) and says for the
rest which flag turns it on. Open the printed address in a browser; Ctrl-C stops the server.
"""
from __future__ import annotations

from absl import flags

from cpjax.app import handlers, models, server
from cpjax.tools import common
from cpjax.tools.common import ToolError


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_integer("port", 7860, "Port to serve on (0: any free port).")
  flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (0.0.0.0: every interface).")
  for kind, spec in models.KINDS.items():
    flags.DEFINE_string(kind, None, f"A {spec.task} run (workdir) or converted weights.")
  flags.DEFINE_float("max_upload_mb", 50.0, "Largest upload accepted, in MB.")


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise ToolError(f"unexpected arguments: {' '.join(argv[1:])}; give every option as a flag "
                    "(--port=..., --harmonize=...).")
  f = flags.FLAGS
  loaded = {kind: models.load(kind, f[kind].value) for kind in models.KINDS
            if f[kind].value is not None}
  app = handlers.App(loaded, max_upload_bytes=int(f.max_upload_mb * 2**20))
  try:
    httpd = server.Server(app, f.host, f.port, verbose=f.verbose)
  except OSError as e:
    app.close()
    raise ToolError(f"cannot serve on {f.host}:{f.port} ({e.strerror or e}); give another "
                    "--port.") from e
  on = ", ".join(f"{kind}={m.directory}" for kind, m in loaded.items()) or "no models"
  print(f"cpjax.app: serving {httpd.url} ({on}); Ctrl-C stops it.", flush=True)
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()
    app.close()
  return 0


if __name__ == "__main__":
  define_flags()
  common.run_tool(main, "cpjax.app")
