"""Tiny configs shared by the tests: 16 px images, narrow widths, one residual block."""

from attrdis import configuration
from attrdis.configuration import base_config


def xla_flags(devices: int = 4) -> str:
  """The tests' XLA_FLAGS: ``devices`` simulated CPU devices, and XLA:CPU tuned to compile
  fast rather than to run fast (the tests' models are tiny, so compiling them costs far more
  than running them): LLVM at optimisation level 0, the older loop emitters instead of the
  MLIR fusion emitters, and one LLVM module instead of several compiled in parallel. Together
  they cut the CPU time of compiling the tests' train step to a quarter of XLA's defaults
  (``python benchmarks/compile_flags.py``)."""
  return (
    f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    " --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
  )


def tiny_config(image_size: int = 16, batch_size: int = 8, attributes=("identity", "expression")):
  c = base_config()
  c.image_size = image_size
  c.batch_size = batch_size
  c.num_train_steps = 4
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  c.sample_every_steps = 2
  c.num_sample_images = 4
  c.dataset.name = "synthetic_faces"
  c.dataset.builder_config = "tiny"
  c.dataset.attributes = tuple(attributes)
  c.dataset.num_workers = 0
  c.model.encoder_widths = (4, 8, 8)
  c.model.num_res_blocks = 1
  c.model.decoder_up_widths = (8, 4)
  c.model.critic_base_width = 4
  c.model.classifier_widths = (4, 8)
  return c


def config_flags(config) -> list[str]:
  """The command-line overrides (``--config.FIELD=VALUE``) that turn any config file into
  ``config``, for tests that start run_train.py."""
  out = []
  for name, value in configuration.flat_items(config):
    if isinstance(value, tuple):
      value = "(" + ",".join(repr(v) if isinstance(v, str) else str(v) for v in value) + ",)"
    out.append(f"--config.{name}={value}")
  return out
