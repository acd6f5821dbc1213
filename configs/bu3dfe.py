"""BU-3DFE as in the paper: identity and expression (7 classes); 128 px, batch 16,
Adam 1e-4/0.5/0.999, 75 epochs with the last 25 decaying.

    python run_train.py --config=configs/bu3dfe.py --workdir=W \\
        --config.dataset.manual_dir=/path/to/BU-3DFE
"""

from attrdis.configuration import base_config


def get_config():
  config = base_config()
  config.dataset.name = "bu3dfe"
  config.dataset.attributes = ("identity", "expression")
  return config
