"""MultiPIE as in the paper: identity, expression (neutral, scream, squint, surprise) and
illumination; 128 px, batch 16, Adam 1e-4/0.5/0.999, 75 epochs with the last 25 decaying.

    python run_train.py --config=configs/multipie.py --workdir=W \\
        --config.dataset.manual_dir=/path/to/Multi-Pie/data
"""

from attrdis.configuration import base_config


def get_config():
  config = base_config()
  config.dataset.name = "multipie"
  config.dataset.attributes = ("identity", "expression", "illumination")
  return config
