"""The demo: a small model on the procedural synthetic faces (no download), 32 px.

Models identity, expression and illumination (the MultiPIE set); trains on a 2-core CPU
in minutes and leaves checkpoints, metrics and sample grids in the workdir:

    python run_train.py --config=configs/synthetic.py --workdir=/tmp/attrdis_demo

Variants: ``configs/synthetic.py:rafd`` models identity, expression and gaze (RaFD's set);
``configs/synthetic.py:color`` identity, expression and colour (the paper's colour transfer).
"""

from attrdis.configuration import base_config

ATTRIBUTE_SETS = {
    "multipie": ("identity", "expression", "illumination"),
    "rafd": ("identity", "expression", "gaze"),
    "color": ("identity", "expression", "color"),
}


def get_config(variant: str = "multipie"):
  if variant not in ATTRIBUTE_SETS:
    raise ValueError(f"configs/synthetic.py:{variant}: unknown variant; choose one of "
                     f"{', '.join(ATTRIBUTE_SETS)}.")
  config = base_config()
  config.dataset.name = "synthetic_faces"
  config.dataset.builder_config = "32px"
  config.dataset.attributes = ATTRIBUTE_SETS[variant]
  config.image_size = 32
  config.batch_size = 16
  config.num_train_steps = 1500
  config.optimizer.learning_rate = 2e-4
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.sample_every_steps = 250
  config.model.encoder_widths = (16, 32, 32)
  config.model.num_res_blocks = 2
  config.model.decoder_up_widths = (32, 16)
  # A critic narrower than 32 lost the adversarial game once λ_dis = 1 pushed the codes apart:
  # the shuffled-code syntheses turned into checkerboard noise that fools the classifiers
  # (README, Evaluation: results).
  config.model.critic_base_width = 32
  config.model.classifier_widths = (16, 32)
  return config
