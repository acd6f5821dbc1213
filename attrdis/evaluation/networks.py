"""The evaluation networks: simple CNNs trained on the real training split, and their data.

Table IV asks for the accuracy of translated images under a *separate* simple CNN expression
classifier (not the model's own C_m); on synthetic faces the evaluator also reads every other
attribute of a transfer, the expression intensity and the identity with such networks. They
are trained once by the evaluator on the real training images of the model's dataset and
checkpointed in ``workdir/eval_classifiers/`` (``params.msgpack`` + ``meta.json``); a later
run reuses them when the dataset, image size, tasks and training settings are the same
(``python -m attrdis.evaluation.train_networks`` trains them ahead of an evaluation).

A *task* is one output: a class label (``kind='class'``, cross-entropy) or a vector of real
values (``kind='regress'``, mean squared error). Each task has its own network (no shared
weights); all are trained together by one jitted step.

Identity on held-out test identities cannot be classified by a network that only saw the
training identities. On synthetic faces the regressor reads the 25 identity parameters of the
renderer instead (task ``identity_params``; task ``intensity`` reads the expression
intensity), and :func:`identify` names the test identity whose *prototype* (the mean
regressed parameters over that identity's real test images) is nearest; :func:`reader` puts
the two together.

Also here, since the networks train on it: a split of a prepared dataset as arrays
(:class:`SplitArrays`, :func:`read_split`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import time
from typing import Callable, Mapping, Sequence

from absl import logging
import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from attrdis import errors
from attrdis import input_pipeline

DIRNAME = "eval_classifiers"
REGRESSION_FEATURES = ("intensity", "identity_params")  # synthetic faces' real-valued factors


class EvalClassifierError(errors.UserError, RuntimeError):
  """A problem with the evaluation networks or their data; the command ends with it as one
  ``error:`` line, status 1."""


@dataclasses.dataclass(frozen=True)
class Task:
  """One output of the evaluation networks."""

  name: str
  kind: str  # 'class' or 'regress'
  size: int  # number of classes, or of regressed values
  class_names: tuple[str, ...] = ()

  def to_json(self) -> dict:
    return {
      "name": self.name,
      "kind": self.kind,
      "size": self.size,
      "class_names": list(self.class_names),
    }


# ----------------------------------------------------------------------------------------
# Data: a whole split in memory, every label and real-valued feature.


@dataclasses.dataclass
class SplitArrays:
  """A split as arrays. ``images`` uint8 (n, S, S, 3) already resized to the model's size
  (``float = images / 127.5 - 1`` is exactly the training pipeline's input); ``labels``
  int32 (n,) per ClassLabel feature; ``values`` float32 (n, ...) per real-valued feature."""

  images: np.ndarray
  labels: dict[str, np.ndarray]
  values: dict[str, np.ndarray]
  class_names: dict[str, tuple[str, ...]]

  def __len__(self) -> int:
    return int(self.images.shape[0])

  def take(self, index) -> "SplitArrays":
    index = np.asarray(index)
    return SplitArrays(
      self.images[index],
      {k: v[index] for k, v in self.labels.items()},
      {k: v[index] for k, v in self.values.items()},
      self.class_names,
    )


def to_float(images_uint8) -> np.ndarray:
  """uint8 → float32 in [-1, 1], as ``input_pipeline.to_model_image`` scales."""
  return np.asarray(images_uint8, np.float32) / 127.5 - 1.0


def _to_uint8_at(image: np.ndarray, size: int) -> np.ndarray:
  """``input_pipeline.to_model_image`` without the scaling (the same LANCZOS resize)."""
  if image.shape[0] == size and image.shape[1] == size:
    return image
  return np.rint((input_pipeline.to_model_image(image, size) + 1.0) * 127.5).astype(np.uint8)


def read_split(
  builder, split: str, image_size: int, progress: Callable[[str], None] | None = None
) -> SplitArrays:
  """Every record of ``split`` of a prepared builder, images at ``image_size``."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  features = builder.info.features
  splits = builder.info.splits
  if split not in splits:
    raise EvalClassifierError(
      f"dataset {builder.name} has no split {split!r} (it has {', '.join(sorted(splits))})"
    )
  class_features = [k for k, v in features.items() if isinstance(v, tfds.features.ClassLabel)]
  value_features = [k for k in REGRESSION_FEATURES if k in features]
  source = builder.as_data_source(split)
  n = len(source)
  if n == 0:
    raise EvalClassifierError(f"split {split!r} of {builder.name} is empty")
  images = np.zeros((n, image_size, image_size, 3), np.uint8)
  labels = {k: np.zeros((n,), np.int32) for k in class_features}
  values = {}
  for i in range(n):
    record = source[i]
    images[i] = _to_uint8_at(input_pipeline.decode_image(record["image"]), image_size)
    for k in class_features:
      labels[k][i] = int(record[k])
    for k in value_features:
      v = np.asarray(record[k], np.float32)
      if k not in values:
        values[k] = np.zeros((n,) + v.shape, np.float32)
      values[k][i] = v
    if progress and ((i + 1) % 1000 == 0 or i + 1 == n) and n > 1000:
      progress(f"read {split}: {i + 1}/{n} images")
  names = {k: tuple(features[k].names) for k in class_features}
  return SplitArrays(images, labels, values, names)


def default_tasks(
  dataset_name: str, split: SplitArrays, attributes: Sequence[str]
) -> tuple[Task, ...]:
  """What the evaluator reads from images.

  Synthetic faces: every labelled attribute but identity (expression, illumination, gaze,
  colour) as classes, and two regressors: intensity and the 25 identity parameters. Other
  datasets: the model's attributes but identity (held-out test identities cannot be
  classified), e.g. expression for Table IV.
  """
  if dataset_name == "synthetic_faces":
    names = [k for k in ("expression", "illumination", "gaze", "color") if k in split.labels]
  else:
    names = [a for a in attributes if a != "identity" and a in split.labels]
  tasks = [Task(k, "class", len(split.class_names[k]), split.class_names[k]) for k in names]
  if dataset_name == "synthetic_faces":
    for k in REGRESSION_FEATURES:
      if k in split.values:
        tasks.append(Task(k, "regress", int(np.prod(split.values[k].shape[1:]))))
  return tuple(tasks)


def targets_of(split: SplitArrays, tasks: Sequence[Task]) -> dict[str, np.ndarray]:
  """Class labels (n,) or regression targets (n, size) of each task."""
  out = {}
  for t in tasks:
    out[t.name] = (
      split.labels[t.name]
      if t.kind == "class"
      else split.values[t.name].reshape(len(split), -1).astype(np.float32)
    )
  return out


# ----------------------------------------------------------------------------------------
# Networks.


def conv_widths(image_size: int, base: int = 32, cap: int = 128) -> tuple[int, ...]:
  """Stride-2 stages until the feature map is 4×4 (at least one): 32 px → 3 stages."""
  stages = max(1, int(round(np.log2(max(image_size, 8) / 4))))
  return tuple(min(base * 2**i, cap) for i in range(stages))


class SmallCNN(nn.Module):
  """Per stage conv 3×3 → ReLU → conv 3×3 stride 2 → ReLU (to 4×4); dense 128 → ReLU →
  dense. (The stride-1 conv of each stage sees every pixel before the resolution halves:
  the expressions' details are a few pixels wide at 32 px.)"""

  out: int
  widths: tuple[int, ...]
  hidden: int = 128

  @nn.compact
  def __call__(self, x):
    for w in self.widths:
      x = nn.relu(nn.Conv(w, (3, 3))(x))
      x = nn.relu(nn.Conv(w, (3, 3), (2, 2))(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.out)(x)


class EvalNet(nn.Module):
  """One independent :class:`SmallCNN` per task; returns {task name: (n, size)}."""

  tasks: tuple[Task, ...]
  widths: tuple[int, ...]

  @nn.compact
  def __call__(self, x):
    return {t.name: SmallCNN(t.size, self.widths, name=t.name)(x) for t in self.tasks}


def task_losses(
  outputs: Mapping[str, jax.Array], targets: Mapping[str, jax.Array], tasks: Sequence[Task]
) -> dict[str, jax.Array]:
  out = {}
  for t in tasks:
    if t.kind == "class":
      out[t.name] = jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(outputs[t.name], targets[t.name])
      )
    else:
      out[t.name] = jnp.mean(jnp.square(outputs[t.name] - targets[t.name]))
  return out


@functools.partial(jax.jit, static_argnames=("net", "tx"))
def _train_step(net, tx, params, opt_state, images, targets):
  def loss_fn(p):
    out = net.apply({"params": p}, to_float_jnp(images))
    losses = task_losses(out, targets, net.tasks)
    return sum(losses.values()), losses

  grads, losses = jax.grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, losses


def to_float_jnp(images_uint8):
  return images_uint8.astype(jnp.float32) / 127.5 - 1.0


@functools.partial(jax.jit, static_argnames=("net",))
def _predict_uint8(net, params, images):
  return net.apply({"params": params}, to_float_jnp(images))


@functools.partial(jax.jit, static_argnames=("net",))
def _predict_float(net, params, images):
  return net.apply({"params": params}, images.astype(jnp.float32))


# ----------------------------------------------------------------------------------------
# The trained bundle.


@dataclasses.dataclass
class EvalModel:
  """Trained evaluation networks: ``predict`` (batched, jitted) and their test metrics."""

  net: EvalNet
  params: dict
  tasks: tuple[Task, ...]
  meta: dict
  batch_size: int = 128

  def task(self, name: str) -> Task | None:
    return next((t for t in self.tasks if t.name == name), None)

  def predict(self, images) -> dict[str, np.ndarray]:
    """Outputs per task for images (n, S, S, 3): uint8, or float in [-1, 1]."""
    images = np.asarray(images)
    n, b = len(images), self.batch_size
    fn = _predict_uint8 if images.dtype == np.uint8 else _predict_float
    chunks: dict[str, list] = {t.name: [] for t in self.tasks}
    for start in range(0, n, b):
      x = images[start : start + b]
      if len(x) < b:
        x = np.concatenate([x, np.zeros((b - len(x),) + x.shape[1:], x.dtype)])
      out = fn(self.net, self.params, jnp.asarray(x))
      for k, v in out.items():
        chunks[k].append(np.asarray(v))
    return {k: np.concatenate(v)[:n] for k, v in chunks.items()}

  def classes(self, images) -> dict[str, np.ndarray]:
    """Predicted class per classification task, and the regressor's values."""
    out = self.predict(images)
    return {
      t.name: (np.argmax(out[t.name], axis=-1) if t.kind == "class" else out[t.name])
      for t in self.tasks
    }

  @property
  def test_metrics(self) -> dict[str, float]:
    return dict(self.meta.get("test", {}))


def identity_prototypes(regressed: np.ndarray, identity_labels: np.ndarray):
  """(ids (k,), prototypes (k, d)): mean regressed identity parameters per identity."""
  ids = np.unique(identity_labels)
  protos = np.stack([regressed[identity_labels == i].mean(axis=0) for i in ids])
  return ids, protos


def identify(regressed: np.ndarray, ids: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
  """The identity of the nearest prototype (Euclidean) for each row of ``regressed``."""
  d2 = ((regressed[:, None, :] - prototypes[None, :, :]) ** 2).sum(-1)
  return ids[np.argmin(d2, axis=1)]


def reader(model: EvalModel, test: SplitArrays) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
  """``read(images)`` → {attribute: class per image}: the networks' classes and, where they
  regress the renderer's identity parameters, the identity of the nearest test-identity
  prototype (prototypes from the real ``test`` images)."""
  readable = [t.name for t in model.tasks if t.kind == "class"]
  protos = None
  if model.task("identity_params") is not None and "identity" in test.labels:
    protos = identity_prototypes(
      model.classes(test.images)["identity_params"], test.labels["identity"]
    )

  def read(images) -> dict[str, np.ndarray]:
    out = model.classes(images)
    r = {b: out[b] for b in readable}
    if protos is not None:
      r["identity"] = identify(out["identity_params"], *protos)
    return r

  return read


def pearson(a, b) -> float:
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  if a.size < 2 or a.std() == 0 or b.std() == 0:
    return float("nan")
  return float(np.corrcoef(a, b)[0, 1])


def test_metrics(model: EvalModel, test: SplitArrays) -> dict[str, float]:
  """Each network on the real test split: accuracy per class task; for the regressors, the
  intensity correlation (non-neutral images) and RMSE, and identity accuracy by nearest
  prototype (prototypes from the same test images)."""
  out = model.predict(test.images)
  metrics = {}
  for t in model.tasks:
    if t.kind == "class":
      metrics[f"{t.name}/acc"] = float(np.mean(np.argmax(out[t.name], -1) == test.labels[t.name]))
    else:
      reg = out[t.name]
      truth = test.values[t.name].reshape(len(test), -1)
      metrics[f"{t.name}/rmse"] = float(np.sqrt(np.mean((reg - truth) ** 2)))
      if t.name == "intensity":
        expressive = (
          test.labels["expression"] != 0
          if "expression" in test.labels
          else np.ones(len(test), bool)
        )
        metrics["intensity/corr"] = pearson(reg[expressive, 0], truth[expressive, 0])
      if t.name == "identity_params" and "identity" in test.labels:
        ids, protos = identity_prototypes(reg, test.labels["identity"])
        metrics["identity/acc"] = float(
          np.mean(identify(reg, ids, protos) == test.labels["identity"])
        )
  return metrics


# ----------------------------------------------------------------------------------------
# Training and the workdir cache.


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), DIRNAME)


def spec(
  dataset: str,
  builder_config: str,
  image_size: int,
  tasks: Sequence[Task],
  num_train: int,
  steps: int,
  batch_size: int,
  learning_rate: float,
  seed: int,
) -> dict:
  """What the trained networks depend on (a cached set is reused only if this matches)."""
  return {
    "dataset": dataset,
    "builder_config": builder_config,
    "image_size": int(image_size),
    "tasks": [t.to_json() for t in tasks],
    "num_train": int(num_train),
    "steps": int(steps),
    "batch_size": int(batch_size),
    "learning_rate": float(learning_rate),
    "seed": int(seed),
    "widths": list(conv_widths(image_size)),
  }


def train(
  train_split: SplitArrays,
  tasks: Sequence[Task],
  image_size: int,
  steps: int,
  batch_size: int = 64,
  learning_rate: float = 1e-3,
  seed: int = 0,
  progress: Callable[[str], None] | None = None,
) -> tuple[EvalNet, dict]:
  """Trains the networks on the split (uniform reshuffle each epoch); returns (net, params)."""
  if not tasks:
    raise EvalClassifierError("no attribute to train an evaluation classifier for")
  tasks = tuple(tasks)
  net = EvalNet(tasks, conv_widths(image_size))
  n = len(train_split)
  batch_size = min(batch_size, n)
  key = jax.random.key(seed)
  params = net.init(key, jnp.zeros((1, image_size, image_size, 3), jnp.float32))["params"]
  schedule = optax.cosine_decay_schedule(learning_rate, max(steps, 1))
  tx = optax.adam(schedule)
  opt_state = tx.init(params)
  targets = targets_of(train_split, tasks)
  rng = np.random.default_rng(seed)
  order, at = rng.permutation(n), 0
  t0, log_every = time.time(), max(1, steps // 10)
  for step in range(1, steps + 1):
    if at + batch_size > n:
      order, at = rng.permutation(n), 0
    idx = np.sort(order[at : at + batch_size])
    at += batch_size
    batch_t = {k: jnp.asarray(v[idx]) for k, v in targets.items()}
    params, opt_state, losses = _train_step(
      net, tx, params, opt_state, jnp.asarray(train_split.images[idx]), batch_t
    )
    if progress and (step % log_every == 0 or step == steps):
      loss_txt = " ".join(f"{k}={float(v):.3f}" for k, v in losses.items())
      progress(
        f"eval classifiers: step {step}/{steps} {loss_txt} "
        f"({step / max(time.time() - t0, 1e-9):.1f} steps/s)"
      )
  return net, params


def save(d: str, net: EvalNet, params, meta: dict) -> None:
  """Writes the networks into the folder ``d``."""
  os.makedirs(d, exist_ok=True)
  for name, data in (
    ("params.msgpack", flax.serialization.to_bytes(jax.device_get(params))),
    ("meta.json", json.dumps(meta, indent=1).encode()),
  ):
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, os.path.join(d, name))


def load(d: str, want: dict) -> EvalModel | None:
  """The networks saved in the folder ``d`` if their spec equals ``want``, else None."""
  try:
    with open(os.path.join(d, "meta.json")) as f:
      meta = json.load(f)
    with open(os.path.join(d, "params.msgpack"), "rb") as f:
      raw = f.read()
  except (OSError, ValueError):
    return None
  if meta.get("spec") != want:
    return None
  tasks = tuple(
    Task(t["name"], t["kind"], t["size"], tuple(t["class_names"])) for t in want["tasks"]
  )
  net = EvalNet(tasks, tuple(want["widths"]))
  template = jax.eval_shape(
    lambda: net.init(jax.random.key(0), jnp.zeros((1, want["image_size"], want["image_size"], 3)))
  )["params"]
  try:
    params = flax.serialization.from_bytes(
      jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template), raw
    )
  except (ValueError, KeyError, TypeError) as e:
    logging.warning("Ignoring unreadable evaluation classifiers in %s (%s).", d, e)
    return None
  return EvalModel(net, jax.device_put(params), tasks, meta)


def load_or_train(
  d: str,
  dataset: str,
  builder_config: str,
  image_size: int,
  tasks: Sequence[Task],
  get_train: Callable[[], SplitArrays],
  test: SplitArrays,
  steps: int = 2000,
  batch_size: int = 64,
  learning_rate: float = 1e-3,
  seed: int = 0,
  progress: Callable[[str], None] | None = None,
) -> EvalModel:
  """The networks saved in the folder ``d`` (a workdir's ``eval_classifiers/``, or any folder
  shared by models of the same dataset) if they match, else trained and saved there (with
  their accuracy on ``test``). ``get_train`` reads the training split when needed."""
  progress = progress or (lambda s: logging.info("%s", s))
  train_split = None
  num_train = None
  meta_path = os.path.join(d, "meta.json")
  if os.path.exists(meta_path):
    try:
      with open(meta_path) as f:
        num_train = json.load(f).get("spec", {}).get("num_train")
    except (OSError, ValueError):
      num_train = None
  if num_train is not None:
    want = spec(
      dataset, builder_config, image_size, tasks, num_train, steps, batch_size, learning_rate, seed
    )
    cached = load(d, want)
    if cached is not None:
      progress(f"evaluation classifiers from {d}")
      return cached
  train_split = get_train()
  want = spec(
    dataset,
    builder_config,
    image_size,
    tasks,
    len(train_split),
    steps,
    batch_size,
    learning_rate,
    seed,
  )
  progress(
    f"training evaluation classifiers ({', '.join(t.name for t in tasks)}) on "
    f"{len(train_split)} training images for {steps} steps"
  )
  net, params = train(
    train_split, tasks, image_size, steps, batch_size, learning_rate, seed, progress
  )
  model = EvalModel(net, params, tuple(tasks), {"spec": want})
  model.meta["test"] = test_metrics(model, test)
  save(d, net, params, model.meta)
  progress(
    f"evaluation classifiers saved in {d}; test: "
    + ", ".join(f"{k}={v:.3f}" for k, v in model.meta["test"].items())
  )
  return model
