"""Every config loads in every variant, unknown variants are refused, the tiny variants of the
copy-paste configs train end to end (demo's is exercised by tests/train), FCN's default is the
reference schedule, and the configs that fine-tune a pretrained trunk refuse to start without it
(unless random weights are asked for)."""
from __future__ import annotations

import json

import jax
import pytest

from conftest import REPO, load_config
from cpjax import tasks
from cpjax.train import trainer

CONFIGS = {"faces": ["", "tiny"], "cityscapes": ["", "tiny"], "demo": ["", "tiny"],
           "iharmony4_dih": ["", "joint", "tiny"],
           "iharmony4_idih": ["", "idih512", "dih256", "tiny"],
           "iharmony4_idih_hrnet": ["", "w18s", "w18", "w32", "w18s_v2p", "w18_v2p", "w18s_no_mask",
                                    "tiny"],
           "harmonization_demo": ["", "tiny"],
           "video_inpainting": ["", "davis", "tiny"], "video_demo": ["", "tiny"],
           "fcn_voc": ["", "32s", "16s", "8s", "4s", "224", "32s_224", "16s_224", "8s_224",
                       "4s_224", "tiny"],
           "fcn_demo": ["", "tiny"]}


def test_every_config_file_is_listed():
  assert {p.stem for p in (REPO / "configs").glob("*.py")} == set(CONFIGS)


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in CONFIGS.items() for v in vs])
def test_config_loads(name, variant):
  c = load_config(name, variant)
  assert c.task and c.total_steps > 0 and c.batch_size > 0
  if variant == "tiny":
    assert c.total_steps <= 10 and c.data.image_size <= 64


def test_paper_hyperparameters():
  """faces.py and cityscapes.py carry the paper's numbers (section 3.3)."""
  f, c = load_config("faces"), load_config("cityscapes")
  assert (f.data.image_size, f.batch_size, f.total_steps) == (512, 5, 250_000)
  assert f.transform.sigma == 15
  assert (f.loss.alpha, f.loss.gamma, f.loss.gp_lambda) == (1e-4, 1e-3, 10.0)
  assert (f.optim.lr, f.optim.b1, f.optim.b2) == (2e-4, 0.0, 0.9)
  assert c.transform.sigma == 10 and tuple(c.data.resize) == (512, 1024)
  assert len(f.model.dilations) == 7 and max(f.model.dilations) == 16


def _none_fields(tree: dict, prefix: str = "") -> list[str]:
  out = []
  for key, value in tree.items():
    if isinstance(value, dict):
      out += _none_fields(value, f"{prefix}{key}.")
    elif value is None:
      out.append(prefix + key)
  return out


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in CONFIGS.items() for v in vs])
def test_every_field_can_be_set_on_the_command_line(name, variant):
  """ml_collections makes no --config.x flag for a None field: configs say "off" with 0 or ''."""
  assert not _none_fields(load_config(name, variant).to_dict())


def test_command_line_sets_fields_a_variant_switched_off(monkeypatch):
  """harmonization_demo turns keep_foreground and resize off; both can be set again."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ["prog", f"--config={REPO / 'configs' / 'harmonization_demo.py'}",
          "--config.data.keep_foreground=mask", "--config.data.resize=96",
          "--config.eval.num_examples=3"]
  monkeypatch.setattr("sys.argv", argv)   # config_flags reads the overrides from sys.argv
  values = flags.FlagValues()
  config = config_flags.DEFINE_config_file("config", flag_values=values)
  values(argv)
  assert (config.value.data.keep_foreground, config.value.data.resize) == ("mask", 96)
  assert config.value.eval.num_examples == 3


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unknown_variant_is_refused(name):
  with pytest.raises(ValueError, match=f"unknown variant 'huge' of configs/{name}.py"):
    load_config(name, "huge")


@pytest.mark.parametrize("name", ["faces", "cityscapes"])
def test_tiny_variant_trains(name, tmp_path):
  c = load_config(name, "tiny")
  c.total_steps, c.checkpoint.async_save = 2, False
  state = trainer.train(c, tmp_path, devices=jax.devices()[:1])
  assert int(state.step) == 2
  result = json.loads((tmp_path / "eval" / "step_00000002.json").read_text())
  assert result["num_examples"] == c.eval.num_examples


@pytest.mark.parametrize("variant,lr", [("", 1e-10), ("32s", 1e-10), ("16s", 1e-12),
                                        ("8s", 1e-14), ("4s", 1e-14)])
def test_fcn_voc_default_is_the_reference_schedule(variant, lr):
  """pytorch-fcn's train_fcn{32,16,8}s.py (the FCN authors' solver): whole images at batch 1,
  100,000 iterations, SGD momentum 0.99, weight decay 5e-4, biases at 2x lr without decay, the
  pixel-summed loss, validation every 4,000; whole images padded to 500x500 (labels 255, the
  image with the Caffe mean colour), in training and evaluation."""
  c = load_config("fcn_voc", variant)
  assert (c.batch_size, c.total_steps) == (1, 100_000)
  assert (c.optim.name, c.optim.lr, c.optim.momentum) == ("sgd", lr, 0.99)
  assert (c.optim.weight_decay, c.optim.bias_lr_mult, c.loss.reduction) == (5e-4, 2.0, "sum")
  assert (c.data.augment, c.data.image_size, c.data.resize, c.data.flip) == ("pad", 500, 0, False)
  assert tuple(c.data.pad_color) == (123, 117, 104)     # round(Caffe mean BGR) as RGB
  assert (c.eval.mode, c.eval.every_steps, c.checkpoint.every_steps) == ("pad", 4000, 4000)
  assert c.model.widths == (64, 128, 256, 512, 512) and c.model.vgg_init == ""


@pytest.mark.parametrize("variant,stage", [("224", "32s"), ("32s_224", "32s"), ("8s_224", "8s")])
def test_fcn_voc_224_is_the_quick_variant(variant, stage):
  """The report's 224 px geometry and 30 epochs of VOC train at batch 8, with the reference's lr
  times the batch size."""
  c, reference = load_config("fcn_voc", variant), load_config("fcn_voc", stage)
  assert (c.batch_size, c.total_steps, c.data.image_size) == (8, 30 * 1464 // 8, 224)
  assert tuple(c.data.resize) == (224, 224) and c.data.augment == "crop"
  assert c.optim.lr == pytest.approx(8 * reference.optim.lr, rel=1e-12)
  assert c.model.variant == stage and c.eval.mode == "resize"


_MISSING = [("fcn_voc", v, "vgg_init", "vgg16_from_caffe.pth", "vgg16_caffe")
            for v in ("", "16s", "4s", "224", "8s_224")] + [
    ("iharmony4_idih_hrnet", v, "backbone_init", file, model)
    for v, file, model in (("", "hrnet_w18_small_model_v2.pth", "hrnet_w18s"),
                           ("w18", "hrnetv2_w18_imagenet_pretrained.pth", "hrnet_w18"),
                           ("w32", "hrnetv2_w32_imagenet_pretrained.pth", "hrnet_w32"),
                           ("w18_v2p", "hrnetv2_w18_imagenet_pretrained.pth", "hrnet_w18"),
                           ("w18s_no_mask", "hrnet_w18_small_model_v2.pth", "hrnet_w18s"))]


@pytest.mark.parametrize("name,variant,field,file,model", _MISSING)
def test_missing_pretrained_weights_are_refused(name, variant, field, file, model):
  """Without the trunk's weights a new run does not start: one line naming the flag, the file
  and the exact convert command. `=random` (asked for explicitly) or init_from lets it."""
  c = load_config(name, variant)
  with pytest.raises(ValueError) as error:
    tasks.build(c).check_warm_start()
  message = str(error.value)
  assert "\n" not in message and message.startswith(f"model.{field} is not set")
  assert (f"python -m cpjax.tools.convert --from={file} --model={model} --out=weights/{model} "
          f"and pass --config.model.{field}=weights/{model}") in message
  assert f"--config.model.{field}=random" in message
  c.model[field] = "random"
  tasks.build(c).check_warm_start()
  c.model[field], c.init_from = "", "/some/converted/network"
  tasks.build(c).check_warm_start()


@pytest.mark.parametrize("name,variant", [("fcn_voc", "tiny"), ("fcn_demo", ""),
                                          ("fcn_demo", "tiny"), ("iharmony4_idih_hrnet", "tiny")])
def test_tiny_and_demo_configs_need_no_weights(name, variant):
  """The variants tests, CI and the demos train (narrow networks from scratch) say 'random'."""
  c = load_config(name, variant)
  assert c.model.get("vgg_init", c.model.get("backbone_init")) == "random"
  tasks.build(c).check_warm_start()
