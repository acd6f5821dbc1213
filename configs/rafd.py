"""RaFD as in the paper: identity, expression (8 classes) and gaze, frontal camera;
128 px, batch 16, Adam 1e-4/0.5/0.999, 75 epochs with the last 25 decaying.

    python run_train.py --config=configs/rafd.py --workdir=W \\
        --config.dataset.manual_dir=/path/to/RaFD
"""

from attrdis.configuration import base_config


def get_config():
  config = base_config()
  config.dataset.name = "rafd"
  config.dataset.attributes = ("identity", "expression", "gaze")
  return config
