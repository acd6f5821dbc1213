"""The base config (the paper's settings) and the checks every command runs before compiling.

Configs under ``configs/`` start from :func:`base_config` and change what their dataset needs.
"""

from __future__ import annotations

import math
import numbers

import ml_collections

from attrdis import errors

# Fields whose change makes a checkpoint unusable (shapes, labels or data differ).
STRUCTURAL_FIELDS = (
  "image_size",
  "model",
  "dataset.name",
  "dataset.builder_config",
  "dataset.attributes",
)

# Fields only the training loop and the data reader read: the compiled train step does not
# depend on them (its traced program is reused across runs that differ only here).
LOOP_FIELDS = (
  "log_every_steps",
  "checkpoint_every_steps",
  "keep_checkpoints",
  "sample_every_steps",
  "num_sample_images",
  "eval_every_steps",
  "resume_from_intact",
  "dataset.data_dir",
  "dataset.manual_dir",
  "dataset.num_workers",
)

DTYPES = ("float32", "bfloat16")
NORMS = ("instance", "layer", "none")  # models.NORMS (kept here: configs import no JAX)


class ConfigError(errors.UserError, ValueError):
  """A config that cannot work; the message names the field and what to do."""


def base_config() -> ml_collections.ConfigDict:
  """The paper's settings (docs/design.md §1–2): 128 px, batch 16, Adam 1e-4/0.5/0.999,
  75 epochs."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = 128
  c.batch_size = 16  # global, over all devices and processes
  c.num_epochs = 75
  c.num_train_steps = -1  # -1: num_epochs × (train examples // batch_size)
  c.dtype = "float32"  # compute dtype; params, optimizer states and losses stay float32

  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.sample_every_steps = 1000  # image grids to TensorBoard and workdir/samples/
  c.num_sample_images = 8
  c.eval_every_steps = 0  # 0: never run the evaluator during training

  # Non-finite losses (docs/reliability.md). Every step flags a non-finite loss term or
  # update in its metrics and leaves the params and optimizer states as they were (the step
  # counter still advances); the host sees the flag when it fetches metrics (every
  # log_every_steps, and before every checkpoint, so no non-finite step precedes a save).
  # False: stop there, naming the terms and the step; the last checkpoint is kept.
  # True: go on, skipping such updates; the metric `nonfinite_updates` counts them.
  c.skip_nonfinite_updates = False
  # For tests of the above only: N > 0 replaces the images of step N's batch with NaN
  # (on the host, before the step; the compiled step is unchanged). 0: off.
  c.debug_nan_at_step = 0
  # A damaged latest checkpoint (docs/reliability.md) stops training with a message
  # naming it and the newest intact one. True: move the damaged ones to
  # workdir/damaged_checkpoints/ (never deleted) and resume from the newest intact one.
  c.resume_from_intact = False

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "synthetic_faces"
  c.dataset.builder_config = ""  # "" = the builder's default config
  c.dataset.attributes = ("identity", "expression")  # E_1..E_M, in this order
  c.dataset.manual_dir = ""  # the vendor's folder for the licensed databases
  c.dataset.data_dir = ""  # where TFDS keeps prepared data ("" = TFDS' default)
  c.dataset.num_workers = -1  # grain worker processes (-1: chosen from the machine's cores)

  c.model = ml_collections.ConfigDict()
  c.model.encoder_widths = (32, 64, 128)  # enc-1..enc-3; the last is the code's channels
  c.model.num_res_blocks = 6
  c.model.decoder_up_widths = (64, 32)  # dec-1, dec-2 (Table I)
  c.model.wide_decoder = False  # the released code: dec widths × (M+1)
  c.model.norm = "instance"  # after each encoder/decoder conv: instance (paper), layer, none
  c.model.critic_base_width = 64
  c.model.critic_max_blocks = 6
  c.model.classifier_widths = (64, 128)  # the last must equal the code's channels
  c.model.classifier_leaky_relu = True  # the paper; the released code uses ReLU

  c.loss_weights = ml_collections.ConfigDict()
  c.loss_weights.rec = 10.0  # λ_rec
  c.loss_weights.cls_x = 1.0  # L_cls^x, codes through the latent entry
  c.loss_weights.dis = 1.0  # L_dis
  c.loss_weights.cls_trn = 1.0  # L_cls^x̃, shuffled-code syntheses
  c.loss_weights.adv = 1.0  # L_adv^G
  c.loss_weights.gp = 10.0  # λ_gp

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-4
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  c.optimizer.decay_fraction = 25 / 75  # last part of training: linear decay to 0
  return c


def flat_items(config, prefix=""):
  """Yields (dotted name, value) for every leaf of a ConfigDict or dict."""
  for key in sorted(config.keys()):
    value = config[key]
    name = f"{prefix}{key}"
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      yield from flat_items(value, name + ".")
    else:
      yield name, value


def is_under(name: str, fields) -> bool:
  """Whether the dotted field ``name`` is one of ``fields`` or inside one of them."""
  return any(name == f or name.startswith(f + ".") for f in fields)


def structural_differences(saved: dict, current: ml_collections.ConfigDict) -> list[str]:
  """The structural fields whose values differ between a saved config and the current one."""

  def norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v

  saved_flat = dict(flat_items(saved))
  current_flat = dict(flat_items(current))
  diffs = []
  for name in sorted(set(saved_flat) | set(current_flat)):
    if not is_under(name, STRUCTURAL_FIELDS):
      continue
    a, b = norm(saved_flat.get(name, "<absent>")), norm(current_flat.get(name, "<absent>"))
    if a != b:
      diffs.append(f"{name}: checkpoint has {a!r}, config has {b!r}")
  return diffs


def _kind(value):
  """The type family a config value must keep: bool, int, float, str or tuple."""
  if isinstance(value, bool):
    return bool
  if isinstance(value, numbers.Integral):
    return int
  if isinstance(value, numbers.Real):
    return float
  if isinstance(value, str):
    return str
  if isinstance(value, (tuple, list)):
    return tuple
  return None


def check_types(config, reference=None, prefix="config.") -> None:
  """Each field that :func:`base_config` defines keeps its type (an int may stand for a float,
  a list for a tuple); a config file that sets ``batch_size = "16"`` is refused here."""
  reference = base_config() if reference is None else reference
  for key in reference.keys():
    if key not in config:
      continue
    want, got = reference[key], config[key]
    name = f"{prefix}{key}"
    if isinstance(want, (dict, ml_collections.ConfigDict)):
      if not isinstance(got, (dict, ml_collections.ConfigDict)):
        raise ConfigError(f"{name}={got!r}: must be a group of fields, like the base config's.")
      check_types(got, want, name + ".")
      continue
    kind, have = _kind(want), _kind(got)
    if kind is None or kind == have or (kind is float and have is int):
      continue
    example = {
      bool: "True or False",
      int: "an integer",
      float: "a number",
      str: "a string",
      tuple: "a tuple, e.g. ('a', 'b')",
    }[kind]
    raise ConfigError(f"{name}={got!r} ({type(got).__name__}): must be {example}.")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks that need no dataset and no devices. Raises ConfigError naming the field."""
  check_types(config)
  if not 0 <= config.seed < 2**31:
    raise ConfigError(f"config.seed={config.seed}: must be from 0 to 2**31 - 1.")
  s = config.image_size
  if not isinstance(s, int) or s % 8 or not 16 <= s <= 256:
    raise ConfigError(f"config.image_size={s!r}: must be a multiple of 8 from 16 to 256.")
  if config.batch_size < 2:
    raise ConfigError(
      f"config.batch_size={config.batch_size}: needs at least 2 images to "
      "shuffle codes between them."
    )
  if config.dtype not in DTYPES:
    raise ConfigError(f"config.dtype={config.dtype!r}: choose one of {', '.join(DTYPES)}.")
  attrs = tuple(config.dataset.attributes)
  if not attrs:
    raise ConfigError(
      "config.dataset.attributes=(): is empty; name at least one labelled "
      "attribute to model (e.g. 'identity,expression')."
    )
  if len(set(attrs)) != len(attrs):
    raise ConfigError(f"config.dataset.attributes={attrs}: an attribute is named twice.")
  for a in attrs:
    if not isinstance(a, str) or not a or any(ch in a for ch in ", ()'\""):
      raise ConfigError(
        f"config.dataset.attributes={attrs}: {a!r} is not an attribute name; on the command "
        "line give a tuple: --config.dataset.attributes=\"('identity','expression')\"."
      )
  m = config.model
  if len(m.encoder_widths) != 3:
    raise ConfigError(
      f"config.model.encoder_widths={tuple(m.encoder_widths)}: needs 3 widths "
      "(enc-1, enc-2, enc-3)."
    )
  if len(m.classifier_widths) != 2 or m.classifier_widths[-1] != m.encoder_widths[-1]:
    raise ConfigError(
      f"config.model.classifier_widths={tuple(m.classifier_widths)}: needs 2 widths, the last "
      f"equal to the code's channels (config.model.encoder_widths[-1]={m.encoder_widths[-1]}), "
      "since codes enter the classifiers at their dense layer."
    )
  if m.norm not in NORMS:
    raise ConfigError(f"config.model.norm={m.norm!r}: choose one of {', '.join(NORMS)}.")
  if len(m.decoder_up_widths) != 2:
    raise ConfigError(f"config.model.decoder_up_widths={tuple(m.decoder_up_widths)}: needs 2.")
  if not 0.0 <= config.optimizer.decay_fraction <= 1.0:
    raise ConfigError(
      f"config.optimizer.decay_fraction={config.optimizer.decay_fraction}: must be in [0, 1]."
    )
  for name in (
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "sample_every_steps",
    "num_sample_images",
  ):
    if config[name] < 1:
      raise ConfigError(f"config.{name}={config[name]}: must be ≥ 1.")
  if config.num_train_steps == 0 or config.num_train_steps < -1:
    raise ConfigError(
      f"config.num_train_steps={config.num_train_steps}: must be ≥ 1, or -1 "
      "for config.num_epochs epochs."
    )
  if config.eval_every_steps < 0:
    raise ConfigError(f"config.eval_every_steps={config.eval_every_steps}: must be ≥ 0 (0: never).")
  if config.dataset.num_workers < -1:
    raise ConfigError(
      f"config.dataset.num_workers={config.dataset.num_workers}: must be ≥ 0, "
      "or -1 to choose from the machine's cores."
    )
  for name in ("encoder_widths", "decoder_up_widths", "classifier_widths"):
    widths = tuple(m[name])
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
      raise ConfigError(f"config.model.{name}={widths}: widths must be integers ≥ 1.")
  for name, least in (("num_res_blocks", 0), ("critic_base_width", 1), ("critic_max_blocks", 1)):
    if m[name] < least:
      raise ConfigError(f"config.model.{name}={m[name]}: must be ≥ {least}.")
  if config.num_epochs < 1:
    raise ConfigError(
      f"config.num_epochs={config.num_epochs}: must be ≥ 1 (it counts when "
      "config.num_train_steps is -1)."
    )
  for name, value in flat_items(config.loss_weights, "loss_weights."):
    if not math.isfinite(value) or value < 0:
      raise ConfigError(f"config.{name}={value}: must be a finite number ≥ 0.")
  lr = config.optimizer.learning_rate
  if not math.isfinite(lr) or lr <= 0:
    raise ConfigError(f"config.optimizer.learning_rate={lr}: must be a finite number > 0.")
  for name in ("b1", "b2"):
    if not 0.0 <= config.optimizer[name] < 1.0:
      raise ConfigError(f"config.optimizer.{name}={config.optimizer[name]}: must be in [0, 1).")
  if config.get("debug_nan_at_step", 0) < 0:
    raise ConfigError(f"config.debug_nan_at_step={config.debug_nan_at_step}: must be ≥ 0 (0: off).")
