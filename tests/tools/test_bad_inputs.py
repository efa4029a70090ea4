"""Bad input to every command-line tool, run in-process through its real entry point
(`define_flags` + `common.run_tool(main)`, absl parsing the argv): each case must end with exit
status 1 and one line `cpjax.tools.<tool>: ...` naming the problem, no traceback, and leave every
file in the test's folder as it was (inputs and any existing output, byte for byte; nothing new
written). No case trains a model: runs of another task are converted-weights folders whose
`converted.json` names another model (read before any weights).

Also here: the outputs rule that every tool shares (an existing output only with --overwrite, an
input never, not even through a hard link or a symlink), and masks given as an alpha matte.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import pathlib
import re
import sys

import numpy as np
import pytest
from absl import flags
from absl import logging as absl_logging
from PIL import Image

from cpjax.tools import common
from data_pipelines import video

H, W = 30, 40        # source, composite and mask size
HT, WT = 41, 59      # target size


def _save(path: pathlib.Path, pixels: np.ndarray) -> pathlib.Path:
  Image.fromarray(pixels).save(path)
  return path


def _smooth(h: int, w: int, phase: float) -> np.ndarray:
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  image = 0.5 + 0.4 * np.sin(6 * x[..., None] + 4 * y[..., None] + phase + np.arange(3))
  return np.round(image * 255).astype(np.uint8)


def _region(h: int, w: int) -> np.ndarray:
  """uint8 [h, w]: 255 on a box in the middle, 0 elsewhere."""
  m = np.zeros((h, w), np.uint8)
  m[h // 4:3 * h // 4, w // 4:3 * w // 4] = 255
  return m


def _matte(h: int, w: int) -> np.ndarray:
  """uint8 RGBA [h, w, 4] as image editors export a cut-out: white colour everywhere, the
  region in the alpha channel."""
  return np.concatenate([np.full((h, w, 3), 255, np.uint8), _region(h, w)[..., None]], -1)


@pytest.fixture
def d(tmp_path) -> pathlib.Path:
  """The inputs of every case, in one folder (each case may add its own files)."""
  _save(tmp_path / "source.png", _smooth(H, W, 0.0))
  _save(tmp_path / "target.png", _smooth(HT, WT, 1.0))
  _save(tmp_path / "mask.png", _region(H, W))
  gray = _region(H, W)
  gray[:, : W // 2] = 100                        # half the pixels 39% gray
  _save(tmp_path / "gray.png", gray)
  _save(tmp_path / "empty.png", np.zeros((H, W), np.uint8))
  _save(tmp_path / "matte.png", _matte(H, W))
  (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
  (tmp_path / "notes.txt").write_text("not a checkpoint\n")
  (tmp_path / "existing.png").write_bytes(b"an earlier result")
  os.link(tmp_path / "target.png", tmp_path / "hardlink_target.png")
  os.link(tmp_path / "mask.png", tmp_path / "hardlink_mask.png")
  os.symlink(tmp_path / "source.png", tmp_path / "symlink_source.png")
  for name in ("frames", "masks"):
    (tmp_path / name).mkdir()
  for i in range(3):
    _save(tmp_path / "frames" / f"{i:05d}.png", _smooth(16, 24, i))
    _save(tmp_path / "masks" / f"{i:05d}.png", _region(16, 24))
  (tmp_path / "used").mkdir()
  (tmp_path / "folder.png").mkdir()
  (tmp_path / "used" / "keep.txt").write_text("an earlier result")
  for name, model in (("fcn_run", "fcn8s"), ("harmonize_run", "idih256"),
                      ("part_run", "vgg16_caffe")):
    (tmp_path / name).mkdir()
    (tmp_path / name / "converted.json").write_text(json.dumps({"model": model}))
  return tmp_path


def _tree(folder: pathlib.Path) -> dict[str, str]:
  """Relative path -> SHA-256 of every file (links followed), and '<dir>' for folders."""
  out = {}
  for p in sorted(folder.rglob("*")):
    rel = str(p.relative_to(folder))
    out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
  return out


def _command(tool: str, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
  """`python -m cpjax.tools.<tool> ARGS`, in this process.

  Returns:
    (exit status, stdout, stderr).
  """
  module = importlib.import_module(f"cpjax.tools.{tool}")
  module.define_flags()
  monkeypatch.setattr(sys, "argv", [f"cpjax/tools/{tool}.py", *args])
  verbosity = absl_logging.get_verbosity()
  capsys.readouterr()
  try:
    common.run_tool(module.main, f"cpjax.tools.{tool}")
    status = 0
  except SystemExit as e:
    status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  finally:
    for flag in list(flags.FLAGS.flags_by_module_dict().get(module.__name__, [])):
      delattr(flags.FLAGS, flag.name)
    flags.FLAGS.unparse_flags()
    absl_logging.set_verbosity(verbosity)
    handler = absl_logging.get_absl_handler()
    for f in list(handler.filters):
      handler.removeFilter(f)
  out, err = capsys.readouterr()
  return status, out, err


PASTE = ["--workdir={d}/no_run", "--source={d}/source.png", "--target={d}/target.png",
         "--mask={d}/mask.png", "--out={d}/out.png"]
CLONE = ["--source={d}/source.png", "--target={d}/target.png", "--mask={d}/mask.png",
         "--out={d}/out.png", "--offset=5,5"]
HARMONIZE = ["--workdir={d}/no_run", "--image={d}/source.png", "--mask={d}/mask.png",
             "--out={d}/out.png"]
VIDEO = ["--workdir={d}/no_run", "--frames={d}/frames", "--masks={d}/masks",
         "--out={d}/video_out"]
CONVERT = ["--from={d}/notes.txt", "--model=idih256", "--out={d}/weights"]


def _with(base: list[str], *changes: str) -> list[str]:
  """`base` with the flags named in `changes` replaced (or added; '--flag=' removes it)."""
  args = {a.split("=", 1)[0]: a for a in base}
  for change in changes:
    name, _, value = change.partition("=")
    if value or "=" not in change:
      args[name] = change
    else:
      args.pop(name)
  return list(args.values())


def _argv(d: pathlib.Path, base: list[str], *changes: str) -> list[str]:
  """`_with(base, *changes)` with {d} replaced by the folder."""
  return [a.format(d=d) for a in _with(base, *changes)]


# (case id, tool, argv with {d} for the folder, regex the one line must match after the prefix)
CASES = [
    # paste
    ("paste-mask-wrong-size", "paste", _with(PASTE, "--mask={d}/target.png"),
     r"target\.png is 41x59 but \S*source\.png is 30x40; give a mask the size of source\.png"),
    ("paste-mask-empty", "paste", _with(PASTE, "--mask={d}/empty.png"),
     r"empty\.png is empty \(no white pixels\)"),
    ("paste-mask-gray", "paste", _with(PASTE, "--mask={d}/gray.png"),
     r"gray\.png is not a binary mask \(\d+\.\d% of pixels are gray\); save it as black/white"),
    ("paste-source-corrupt", "paste", _with(PASTE, "--source={d}/corrupt.png"),
     r"corrupt\.png cannot be read as an image .*; give a PNG or JPEG file"),
    ("paste-source-text", "paste", _with(PASTE, "--source={d}/notes.txt"),
     r"notes\.txt cannot be read as an image"),
    ("paste-source-missing", "paste", _with(PASTE, "--source={d}/nothere.png"),
     r"nothere\.png: no such file"),
    ("paste-offset-syntax", "paste", _with(PASTE, "--offset=3"), r"--offset='3' is not DX,DY"),
    ("paste-offset-huge", "paste", _with(PASTE, "--offset=100000000000000000000,0"),
     r"with --offset=100000000000000000000,0 the region of \S*mask\.png .* falls outside"),
    ("paste-offset-huge-negative", "paste", _with(PASTE, "--offset=0,-99999999999999999999999"),
     r"falls outside \S*target\.png \(41x59\); use DX in"),
    ("paste-out-is-target", "paste", _with(PASTE, "--out={d}/target.png"),
     r"target\.png is one of the input files .*would be overwritten"),
    ("paste-out-hardlink-target", "paste", _with(PASTE, "--out={d}/hardlink_target.png"),
     r"hardlink_target\.png is one of the input files \(the same file as \S*target\.png\)"),
    ("paste-out-hardlink-mask", "paste", _with(PASTE, "--out={d}/hardlink_mask.png"),
     r"hardlink_mask\.png is one of the input files \(the same file as \S*mask\.png\)"),
    ("paste-out-symlink-source", "paste", _with(PASTE, "--out={d}/symlink_source.png"),
     r"symlink_source\.png is one of the input files"),
    ("paste-out-hardlink-overwrite", "paste",
     _with(PASTE, "--out={d}/hardlink_target.png", "--overwrite"),
     r"hardlink_target\.png is one of the input files"),
    ("paste-out-exists", "paste", _with(PASTE, "--out={d}/existing.png"),
     r"existing\.png exists already; give a new output path, or --overwrite to replace it"),
    ("paste-out-not-png", "paste", _with(PASTE, "--out={d}/out.jpg"), r"give an output path "
     r"ending in \.png"),
    ("paste-out-folder", "paste", _with(PASTE, "--out={d}/folder.png"),
     r"folder\.png is a directory; give an output file path"),
    ("paste-no-workdir", "paste", PASTE,
     r"--workdir: no checkpoint in \S*no_run/checkpoints; train one with"),
    ("paste-workdir-of-another-task", "paste", _with(PASTE, "--workdir={d}/fcn_run"),
     r"--workdir: \S*fcn_run holds a 'fcn' run, but this needs a 'copy_paste' one"),
    # The matte's region (rows 7-21, columns 10-29) fits at this offset, the whole frame would
    # not: reaching the checkpoint means the alpha channel was the mask.
    ("paste-rgba-matte-is-its-alpha", "paste",
     _with(PASTE, "--mask={d}/matte.png", "--offset=25,15"), r"--workdir: no checkpoint in"),
    ("paste-extra-argument", "paste", PASTE + ["stray"], r"unexpected arguments: stray"),
    # clone (no model)
    ("clone-offset-huge", "clone", _with(CLONE, "--offset=100000000000000000000,0"),
     r"the region of \S*mask\.png .* falls outside \S*target\.png \(41x59\)"),
    ("clone-offset-huge-dy", "clone", _with(CLONE, "--offset=0,100000000000000000000"),
     r"falls outside"),
    ("clone-mask-wrong-size", "clone", _with(CLONE, "--mask={d}/target.png"),
     r"target\.png is 41x59 but \S*source\.png is 30x40"),
    ("clone-mask-gray", "clone", _with(CLONE, "--mask={d}/gray.png"), r"not a binary mask"),
    ("clone-mask-empty", "clone", _with(CLONE, "--mask={d}/empty.png"), r"is empty"),
    ("clone-target-corrupt", "clone", _with(CLONE, "--target={d}/corrupt.png"),
     r"corrupt\.png cannot be read as an image"),
    ("clone-out-exists", "clone", _with(CLONE, "--out={d}/existing.png"),
     r"existing\.png exists already; give a new output path, or --overwrite to replace it"),
    ("clone-out-hardlink-target", "clone", _with(CLONE, "--out={d}/hardlink_target.png"),
     r"hardlink_target\.png is one of the input files \(the same file as \S*target\.png\)"),
    ("clone-out-hardlink-overwrite", "clone",
     _with(CLONE, "--out={d}/hardlink_mask.png", "--overwrite"),
     r"hardlink_mask\.png is one of the input files \(the same file as \S*mask\.png\)"),
    ("clone-save-mask-is-mask", "clone", _with(CLONE, "--save_mask={d}/mask.png", "--overwrite"),
     r"mask\.png is one of the input files"),
    ("clone-save-mask-is-out", "clone", _with(CLONE, "--save_mask={d}/out.png"),
     r"--save_mask and --out name the same file"),
    ("clone-segment-missing-workdir", "clone",
     _with(CLONE, "--mask=", "--segment={d}/no_run", "--class=cat"),
     r"--segment: no checkpoint in \S*no_run/checkpoints"),
    ("clone-segment-another-task", "clone",
     _with(CLONE, "--mask=", "--segment={d}/harmonize_run", "--class=cat"),
     r"--segment: \S*harmonize_run holds a 'harmonization' run, but this needs a 'fcn' one"),
    # harmonize
    ("harmonize-mask-wrong-size", "harmonize", _with(HARMONIZE, "--image={d}/target.png"),
     r"mask\.png is 30x40 but \S*target\.png is 41x59"),
    ("harmonize-mask-gray", "harmonize", _with(HARMONIZE, "--mask={d}/gray.png"),
     r"not a binary mask"),
    ("harmonize-mask-empty", "harmonize", _with(HARMONIZE, "--mask={d}/empty.png"),
     r"is empty"),
    ("harmonize-image-corrupt", "harmonize", _with(HARMONIZE, "--image={d}/corrupt.png"),
     r"corrupt\.png cannot be read as an image"),
    ("harmonize-out-is-image", "harmonize", _with(HARMONIZE, "--out={d}/source.png"),
     r"source\.png is one of the input files"),
    ("harmonize-out-symlink-image", "harmonize", _with(HARMONIZE, "--out={d}/symlink_source.png"),
     r"symlink_source\.png is one of the input files"),
    ("harmonize-out-hardlink-mask", "harmonize", _with(HARMONIZE, "--out={d}/hardlink_mask.png"),
     r"hardlink_mask\.png is one of the input files \(the same file as \S*mask\.png\)"),
    ("harmonize-out-exists", "harmonize", _with(HARMONIZE, "--out={d}/existing.png"),
     r"existing\.png exists already; .*--overwrite"),
    ("harmonize-no-workdir", "harmonize", HARMONIZE, r"--workdir: no checkpoint in"),
    ("harmonize-workdir-of-another-task", "harmonize", _with(HARMONIZE, "--workdir={d}/fcn_run"),
     r"fcn_run holds a 'fcn' run, but this needs a 'harmonization' one"),
    ("harmonize-workdir-of-a-part", "harmonize", _with(HARMONIZE, "--workdir={d}/part_run"),
     r"part_run holds converted vgg16_caffe weights, a part of a system"),
    ("harmonize-rgba-matte-is-its-alpha", "harmonize", _with(HARMONIZE, "--mask={d}/matte.png"),
     r"--workdir: no checkpoint in"),
    # inpaint_video
    ("video-no-workdir", "inpaint_video", VIDEO, r"--workdir: no checkpoint in"),
    ("video-workdir-of-another-task", "inpaint_video", _with(VIDEO, "--workdir={d}/fcn_run"),
     r"fcn_run holds a 'fcn' run, but this needs a 'video_inpainting' one"),
    ("video-frames-missing", "inpaint_video", _with(VIDEO, "--frames={d}/nothere"),
     r"nothere does not exist; give a folder of frames or a video file"),
    ("video-frames-corrupt", "inpaint_video", _with(VIDEO, "--frames={d}/masks_and_corrupt"),
     r"00002\.png cannot be read as an image .*; replace or remove it"),
    ("video-mask-count", "inpaint_video", _with(VIDEO, "--masks={d}/frames_and_one"),
     r"holds 4 masks but the video has 3 frames"),
    ("video-masks-empty", "inpaint_video", _with(VIDEO, "--masks={d}/empty_masks"),
     r"no hole in any frame"),
    ("video-out-used", "inpaint_video", _with(VIDEO, "--out={d}/used"),
     r"used exists already and is not an empty folder; give a new output folder, or "
     r"--overwrite"),
    ("video-out-is-a-file", "inpaint_video", _with(VIDEO, "--out={d}/existing.png"),
     r"existing\.png exists already and is not a folder; give a new output folder"),
    ("video-out-is-frames", "inpaint_video", _with(VIDEO, "--out={d}/frames", "--overwrite"),
     r"--out=\S*frames is the folder of the input frames; give another output folder"),
    ("video-out-is-masks", "inpaint_video", _with(VIDEO, "--out={d}/masks", "--overwrite"),
     r"--out=\S*masks is the folder of the input masks; give another output folder"),
    ("video-out-holds-a-frame", "inpaint_video",
     _with(VIDEO, "--out={d}/linked_out", "--overwrite"),
     r"00001\.png is one of the input files \(the same file as \S*frames/00001\.png\)"),
    ("video-rgba-matte-is-its-alpha", "inpaint_video", _with(VIDEO, "--masks={d}/mattes"),
     r"--workdir: no checkpoint in"),
    # convert
    ("convert-text-file", "convert", CONVERT,
     r"\S*notes\.txt is not a PyTorch checkpoint \(it starts with text\); --from takes a \.pth "
     r"or \.pt file written by torch\.save"),
    ("convert-png-file", "convert", _with(CONVERT, "--from={d}/source.png"),
     r"\S*source\.png is not a PyTorch checkpoint \(it is a PNG image\); --from takes"),
    ("convert-pickled-objects", "convert", _with(CONVERT, "--from={d}/objects.pth"),
     r"\S*objects\.pth holds Python objects such as \S*Pickled, which are not loaded \(that "
     r"would run code from the file\); save the model's state_dict\(\)"),
    ("convert-truncated", "convert", _with(CONVERT, "--from={d}/truncated.pth"),
     r"\S*truncated\.pth is not a readable PyTorch checkpoint \(.*\); download it again"),
    ("convert-missing-file", "convert", _with(CONVERT, "--from={d}/nothere.pth"),
     r"--from=\S*nothere\.pth: no such file"),
    ("convert-unknown-model", "convert", _with(CONVERT, "--model=idih"),
     r"--model=idih is unknown; use one of"),
    ("convert-out-used", "convert", _with(CONVERT, "--out={d}/used"),
     r"--out=\S*used exists already and is not an empty folder; give a new output folder, or "
     r"--overwrite to replace the converted weights in it"),
    ("convert-overwrite-other-folder", "convert", _with(CONVERT, "--out={d}/used", "--overwrite"),
     r"--out=\S*used holds files other than converted weights; --overwrite replaces only"),
    ("convert-out-is-a-file", "convert", _with(CONVERT, "--out={d}/existing.png"),
     r"--out=\S*existing\.png exists already and is not a folder"),
    ("convert-from-inside-out", "convert",
     _with(CONVERT, "--from={d}/fcn_run/notes.pth", "--out={d}/fcn_run", "--overwrite"),
     r"--from=\S*fcn_run/notes\.pth lies inside --out=\S*fcn_run"),
]


class Pickled:
  """An object that a checkpoint may pickle besides its tensors."""


def _prepare_case(d: pathlib.Path, case: str) -> None:
  """The extra files some cases need."""
  if case == "video-frames-corrupt":
    (d / "masks_and_corrupt").mkdir()
    for i in range(2):
      _save(d / "masks_and_corrupt" / f"{i:05d}.png", _smooth(16, 24, i))
    (d / "masks_and_corrupt" / "00002.png").write_bytes((d / "corrupt.png").read_bytes())
  elif case == "video-mask-count":
    (d / "frames_and_one").mkdir()
    for i in range(4):
      _save(d / "frames_and_one" / f"{i:05d}.png", _region(16, 24))
  elif case == "video-masks-empty":
    (d / "empty_masks").mkdir()
    for i in range(3):
      _save(d / "empty_masks" / f"{i:05d}.png", np.zeros((16, 24), np.uint8))
  elif case == "video-out-holds-a-frame":
    (d / "linked_out").mkdir()
    os.link(d / "frames" / "00001.png", d / "linked_out" / "00001.png")
  elif case == "video-rgba-matte-is-its-alpha":
    (d / "mattes").mkdir()
    for i in range(3):
      _save(d / "mattes" / f"{i:05d}.png", _matte(16, 24))
  elif case in ("convert-pickled-objects", "convert-truncated"):
    torch = pytest.importorskip("torch")
    torch.save({"weight": torch.ones(2), "extra": Pickled()}, d / "objects.pth")
    (d / "truncated.pth").write_bytes((d / "objects.pth").read_bytes()[:300])
  elif case == "convert-from-inside-out":
    (d / "fcn_run" / "notes.pth").write_text("not a checkpoint\n")


@pytest.mark.parametrize("case,tool,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_no_file(case, tool, argv, expected, d, monkeypatch,
                                                   capsys):
  if tool == "convert":
    pytest.importorskip("torch", reason="the convert tool reads .pth files with PyTorch")
  _prepare_case(d, case)
  before = _tree(d)
  status, _, err = _command(tool, _argv(d, argv), monkeypatch, capsys)
  assert status == 1, err
  assert "Traceback" not in err and "weights_only" not in err
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  prefix = f"cpjax.tools.{tool}: "
  assert lines[0].startswith(prefix), lines[0]
  assert re.search(expected, lines[0][len(prefix):]), lines[0]
  assert _tree(d) == before


def test_the_table_covers_every_tool():
  assert {c[1] for c in CASES} == {"paste", "clone", "harmonize", "inpaint_video", "convert"}


def test_clone_overwrite_replaces_an_existing_output_only(d, monkeypatch, capsys):
  """--overwrite replaces an earlier result with the clone (the same pixels as a new path)."""
  status, out, err = _command("clone", _argv(d, CLONE, "--out={d}/new.png"), monkeypatch,
                              capsys)
  assert status == 0, err
  assert "wrote" in out
  status, _, err = _command("clone", _argv(d, CLONE, "--out={d}/existing.png", "--overwrite"),
                            monkeypatch, capsys)
  assert status == 0, err
  np.testing.assert_array_equal(np.asarray(Image.open(d / "existing.png")),
                                np.asarray(Image.open(d / "new.png")))


def test_clone_with_an_alpha_matte_equals_clone_with_the_binary_mask(d, monkeypatch, capsys):
  """An RGBA cut-out (white colour, the region in alpha) is the same mask as its binary one."""
  for mask, out in (("mask.png", "binary.png"), ("matte.png", "matte_out.png")):
    status, _, err = _command("clone", _argv(d, CLONE, f"--mask={d}/{mask}", f"--out={d}/{out}"),
                              monkeypatch, capsys)
    assert status == 0, err
  np.testing.assert_array_equal(np.asarray(Image.open(d / "matte_out.png")),
                                np.asarray(Image.open(d / "binary.png")))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_read_mask_uses_a_varying_alpha_channel(d, mode):
  """A varying alpha channel is the mask, whatever the colour channels hold; a constant one
  (an opaque RGBA file) leaves the colours to decide."""
  matte = _matte(H, W)
  image = Image.fromarray(matte).convert(mode)
  image.save(d / "cutout.png")
  got = common.read_mask(d / "cutout.png")
  np.testing.assert_array_equal(got[..., 0], _region(H, W) / 255)
  opaque = matte.copy()
  opaque[..., :3] = _region(H, W)[..., None]
  opaque[..., 3] = 255
  _save(d / "opaque.png", opaque)
  np.testing.assert_array_equal(common.read_mask(d / "opaque.png")[..., 0], _region(H, W) / 255)
  black = np.concatenate([np.zeros((H, W, 3), np.uint8), _region(H, W)[..., None]], -1)
  _save(d / "black_cutout.png", black)          # black colour, region in alpha
  np.testing.assert_array_equal(common.read_mask(d / "black_cutout.png")[..., 0],
                                _region(H, W) / 255)


@pytest.mark.parametrize("released", [False, True])
def test_video_masks_use_a_varying_alpha_channel(d, released):
  """The video tool's masks follow the same rule, with either frame preparation."""
  _save(d / "cutout.png", _matte(16, 24))
  np.testing.assert_array_equal(video.read_mask(d / "cutout.png", released),
                                _region(16, 24) > 0)


def test_convert_overwrite_replaces_converted_weights_only(d, monkeypatch, capsys):
  """--overwrite replaces the weights of a folder the tool wrote (its new converted.json names
  the new file); the old files are removed, not rewritten, so a hard link to the old
  converted.json keeps its contents."""
  torch = pytest.importorskip("torch", reason="the convert tool reads .pth files with PyTorch")
  from convert import torch_iharm as ti  # pylint: disable=g-import-not-at-top
  for seed in (0, 1):
    torch.save(ti.build(ti.IDIH, seed=seed).state_dict(), d / f"idih{seed}.pth")
  argv = ["--from={d}/idih0.pth", "--model=idih256", "--out={d}/weights"]
  status, _, err = _command("convert", _argv(d, argv), monkeypatch, capsys)
  assert status == 0, err
  os.link(d / "weights" / "converted.json", d / "old_converted.json")
  old = (d / "old_converted.json").read_text()
  status, _, err = _command("convert", _argv(d, argv, "--from={d}/idih1.pth"), monkeypatch,
                            capsys)
  assert status == 1 and "--overwrite to replace the converted weights in it" in err
  status, _, err = _command("convert", _argv(d, argv, "--from={d}/idih1.pth", "--overwrite"),
                            monkeypatch, capsys)
  assert status == 0, err
  source = json.loads((d / "weights" / "converted.json").read_text())["source"]
  assert source["sha256"] == hashlib.sha256((d / "idih1.pth").read_bytes()).hexdigest()
  assert (d / "old_converted.json").read_text() == old
  assert sorted(p.name for p in (d / "weights").iterdir()) == ["converted.json", "variables"]
