"""run_train.py trains on each licensed database's builder, from a fixture folder named as
the vendor names its files (prepared on first use from config.dataset.manual_dir)."""

import json
import os
import subprocess
import sys

import pytest

from attrdis import train
from tiny import tiny_config
import vendor_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A group of its own, which xdist hands out before single tests: these are among the suite's
# slowest, and left to the end they would keep one worker busy while the other idles.
pytestmark = pytest.mark.xdist_group("vendor_training")


def vendor_config(name, builder_config, attributes, manual_dir, data_dir):
  config = tiny_config(attributes=attributes)
  config.dataset.name = name
  config.dataset.builder_config = builder_config
  config.dataset.manual_dir = str(manual_dir)
  config.dataset.data_dir = str(data_dir)
  config.num_train_steps = 2
  return config


@pytest.mark.parametrize(
  "name,make,builder_config,attributes",
  [
    (
      "multipie",
      vendor_fixtures.make_multipie_fixture,
      "paper_64",
      ("identity", "expression", "illumination"),
    ),
    ("bu3dfe", vendor_fixtures.make_bu3dfe_fixture, "default_64", ("identity", "expression")),
  ],
)
def test_trains_on_vendor_folder(tmp_path, name, make, builder_config, attributes):
  manual_dir = make(tmp_path / "vendor")
  config = vendor_config(name, builder_config, attributes, manual_dir, tmp_path / "tfds")
  state = train.train_and_evaluate(config, str(tmp_path / "w"))
  assert int(state.step) == 2
  rows = [json.loads(l) for l in open(tmp_path / "w" / "metrics.jsonl")]
  assert rows[-1]["step"] == 2
  assert os.path.isdir(tmp_path / "tfds" / name / builder_config)


def test_run_train_cli_on_rafd_fixture(tmp_path):
  manual_dir = vendor_fixtures.make_rafd_fixture(tmp_path / "RaFD")
  config = vendor_config(
    "rafd", "frontal_64", ("identity", "expression", "gaze"), manual_dir, tmp_path / "tfds"
  )
  overrides = [
    f"--config.dataset.manual_dir={manual_dir}",
    f"--config.dataset.data_dir={tmp_path / 'tfds'}",
    "--config.dataset.builder_config=frontal_64",
    "--config.num_train_steps=2",
    "--config.image_size=16",
    "--config.batch_size=8",
    "--config.dataset.num_workers=0",
    "--config.model.encoder_widths=(4,8,8)",
    "--config.model.num_res_blocks=1",
    "--config.model.decoder_up_widths=(8,4)",
    "--config.model.critic_base_width=4",
    "--config.model.classifier_widths=(4,8)",
    "--config.num_sample_images=4",
  ]
  assert config.dataset.attributes == ("identity", "expression", "gaze")
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "run_train.py"),
      f"--config={os.path.join(ROOT, 'configs', 'rafd.py')}",
      f"--workdir={tmp_path / 'w'}",
    ]
    + overrides,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 2/2" in proc.stdout
  assert os.path.exists(tmp_path / "w" / "samples" / "step_0000002.png")


def test_missing_manual_dir_says_where_to_get_the_data(tmp_path):
  config = vendor_config(
    "rafd", "frontal_64", ("identity", "expression"), tmp_path / "nothing_here", tmp_path / "tfds"
  )
  with pytest.raises(Exception, match="rafd.socsci.ru.nl"):
    train.train_and_evaluate(config, str(tmp_path / "w"))
