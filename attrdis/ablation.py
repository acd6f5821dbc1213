"""Ablation I (the paper's §IV-B1): shallow fully connected encoders trained by Eq. 10,

    L_abl = L_cls^x + λ_dis · L_dis,

once per λ_dis (``config.dis_weights``, default 1 and 0), on expression + illumination;
then the Hopkins statistic of the expression codes within each expression cluster
(Table III) and their embeddings (Fig. 4).

    python -m attrdis.ablation --config=configs/ablation.py --workdir=W [--config.X=...]

writes ``W/ablation.json`` (``{"metrics", "settings"}``) and ``W/ablation_embeddings.png``
and prints the table (``--help``: the flags; an error is one ``error: ...`` line, status 1,
or 2 for a bad command line). Metrics per run (prefix ``dis_<λ>/``): ``hopkins/<class>`` (mean over
draws) and ``..._std``, ``hopkins/mean``; ``latent_acc/C_<m>/z_<k>`` and
``entropy/C_<m>/z_<k>`` (every head on every code); ``hopkins_<embedding>/<class>`` (the
Hopkins statistic of the 2-D embedding drawn in the PNG, per expression cluster: Fig. 4's
view, which may be what Table III measured); ``knn_acc/<b>/z_<k>`` (leave-one-out
5-NN accuracy of label b — every label of the split, modelled or not — from code z_k:
illumination read from the expression codes is what λ_dis = 1 should remove).

Here there is no decoder and no z_0: the M codes only have to be classified (Eq. 3) and,
with λ_dis > 0, be uninformative to every other attribute's head (Eq. 4 without its z_0
term). How the heads learn is ``config.classifier_training`` (see configs/ablation.py).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Callable, Sequence

from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax

from attrdis import cli
from attrdis import cluster_metrics
from attrdis import input_pipeline
from attrdis.configuration import ConfigError
from attrdis.evaluation import clustering
from attrdis.evaluation import leakage
from attrdis.evaluation import networks
from attrdis.evaluation import plots

CLASSIFIER_TRAINING = ("images", "joint")


class ShallowEncoder(nn.Module):
  """flatten → dense(hidden) → ReLU → dense(code_dim)."""

  hidden: int
  code_dim: int

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.code_dim)(nn.relu(nn.Dense(self.hidden)(x)))


class AblationNet(nn.Module):
  """M shallow encoders E_m, M heads (dense |m| logits on a code: C_m's latent entry) and,
  for ``classifier_training='images'``, M shallow image paths whose output enters the same
  heads (C_m(x) = head_m(F_m(x)), as the full model's classifiers)."""

  num_classes: tuple[int, ...]
  hidden: int
  code_dim: int

  def setup(self):
    self.encoders = [ShallowEncoder(self.hidden, self.code_dim) for _ in self.num_classes]
    self.features = [ShallowEncoder(self.hidden, self.code_dim) for _ in self.num_classes]
    self.heads = [nn.Dense(n) for n in self.num_classes]

  def encode(self, x) -> list[jax.Array]:
    return [e(x) for e in self.encoders]

  def latent(self, z) -> list[jax.Array]:
    """Every head on one code: [C_m(z) for m]."""
    return [h(z) for h in self.heads]

  def classify_images(self, x) -> list[jax.Array]:
    return [h(f(x)) for h, f in zip(self.heads, self.features)]

  def __call__(self, x):
    codes = self.encode(x)
    return codes, [self.latent(z) for z in codes], self.classify_images(x)


def cross_entropy(logits, labels):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def uniform_cross_entropy(logits):
  """CE(uniform over the classes, softmax(logits)), mean over the batch."""
  return -jnp.mean(jax.nn.log_softmax(logits, axis=-1))


def latent_classification_loss(latent_logits, labels):
  """Eq. 3: mean_m CE(C_m(z_m), y_m); ``latent_logits[k][m]`` = C_m(z_k), labels (b, M)."""
  m = len(latent_logits)
  return sum(cross_entropy(latent_logits[k][k], labels[:, k]) for k in range(m)) / m


def disentanglement_loss(latent_logits):
  """Eq. 4 without z_0: mean over codes k of mean over heads m ≠ k of CE(uniform, C_m(z_k))."""
  m = len(latent_logits)
  if m < 2:
    return jnp.zeros(())
  terms = [
    sum(uniform_cross_entropy(latent_logits[k][j]) for j in range(m) if j != k) / (m - 1)
    for k in range(m)
  ]
  return sum(terms) / m


def _split_params(params):
  enc = {k: v for k, v in params.items() if k.startswith("encoders_")}
  rest = {k: v for k, v in params.items() if not k.startswith("encoders_")}
  return enc, rest


def make_train_step(net: AblationNet, tx, dis_weight: float, classifier_training: str):
  """One jitted update of all params. 'images': encoders by Eq. 10 through heads they do not
  move, heads + image paths by L_cls^c; 'joint': everything by Eq. 10."""
  if classifier_training not in CLASSIFIER_TRAINING:
    raise ConfigError(
      f"config.classifier_training={classifier_training!r}: choose one of "
      f"{', '.join(CLASSIFIER_TRAINING)}."
    )

  def losses(params, x, y):
    if classifier_training == "images":
      enc, rest = _split_params(params)
      frozen = jax.lax.stop_gradient(rest)
      codes = net.apply({"params": {**enc, **frozen}}, x, method="encode")
      latent = [net.apply({"params": {**enc, **frozen}}, z, method="latent") for z in codes]
      images = net.apply({"params": params}, x, method="classify_images")
      cls_c = sum(cross_entropy(l, y[:, m]) for m, l in enumerate(images)) / len(images)
    else:
      codes, latent, _ = net.apply({"params": params}, x)
      cls_c = jnp.zeros(())
    cls_x = latent_classification_loss(latent, y)
    dis = disentanglement_loss(latent)
    total = cls_x + dis_weight * dis + cls_c
    return total, {"cls_x": cls_x, "dis": dis, "cls_c": cls_c}

  @jax.jit
  def step(params, opt_state, x, y):
    grads, metrics = jax.grad(losses, has_aux=True)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  return step


@functools.partial(jax.jit, static_argnames=("net",))
def _codes_and_logits(net, params, x):
  codes = net.apply({"params": params}, x, method="encode")
  return codes, [net.apply({"params": params}, z, method="latent") for z in codes]


def train_one(
  config, train_split: networks.SplitArrays, dis_weight: float, progress: Callable[[str], None]
):
  """Trains one AblationNet; returns (net, params)."""
  attributes = tuple(config.dataset.attributes)
  num_classes = tuple(len(train_split.class_names[a]) for a in attributes)
  net = AblationNet(num_classes, int(config.model.hidden), int(config.model.code_dim))
  s = int(config.image_size)
  params = net.init(jax.random.key(config.seed), jnp.zeros((1, s, s, 3)))["params"]
  tx = optax.adam(config.learning_rate)
  opt_state = tx.init(params)
  step_fn = make_train_step(net, tx, float(dis_weight), config.classifier_training)
  images = train_split.images
  labels = np.stack([train_split.labels[a] for a in attributes], axis=1).astype(np.int32)
  n = len(images)
  b = min(int(config.batch_size), n)
  rng = np.random.default_rng(config.seed)
  order, at = rng.permutation(n), 0
  steps = int(config.num_train_steps)
  t0 = time.time()
  for i in range(1, steps + 1):
    if at + b > n:
      order, at = rng.permutation(n), 0
    idx = order[at : at + b]
    at += b
    x = jnp.asarray(networks.to_float(images[idx]))
    params, opt_state, m = step_fn(params, opt_state, x, jnp.asarray(labels[idx]))
    if i % max(1, steps // 5) == 0 or i == steps:
      progress(
        f"λ_dis={dis_weight:g}: step {i}/{steps} cls_x={float(m['cls_x']):.3f} "
        f"dis={float(m['dis']):.3f} cls_c={float(m['cls_c']):.3f} "
        f"({i / max(time.time() - t0, 1e-9):.0f} steps/s)"
      )
  return net, params


def evaluate_codes(
  codes: Sequence[np.ndarray],
  logits,
  split: networks.SplitArrays,
  attributes: Sequence[str],
  config,
) -> dict[str, float]:
  """The ablation's metrics of one run on a split (see the module docstring)."""
  out: dict[str, float] = {}
  for k, a in enumerate(attributes):
    for m, b in enumerate(attributes):
      l = np.asarray(logits[k][m])
      out[f"latent_acc/C_{b}/z_{a}"] = float(np.mean(np.argmax(l, -1) == split.labels[b]))
      out[f"entropy/C_{b}/z_{a}"] = float(np.mean(np.asarray(cluster_metrics.entropies(l))))
    nearest = leakage.knn_neighbours(codes[k], 5)
    for b in split.labels:  # every label of the split: what else a code carries (identity…)
      out[f"knn_acc/{b}/z_{a}"] = leakage.knn_vote_accuracy(nearest, split.labels[b])
  if "expression" in attributes:
    k = list(attributes).index("expression")
    out.update(hopkins_by_expression(codes[k], split, config, "hopkins"))
  return out


def hopkins_by_expression(
  points: np.ndarray, split: networks.SplitArrays, config, prefix: str
) -> dict[str, float]:
  """``<prefix>/<class>`` (+ ``_std``) and ``<prefix>/mean``: the Hopkins statistic of
  ``points`` within each expression cluster (classes with too few points are left out)."""
  names = split.class_names["expression"]
  mean, std = clustering.hopkins_per_class(
    points,
    split.labels["expression"],
    len(names),
    int(config.hopkins_draws),
    int(config.seed),
    float(config.hopkins_fraction),
  )
  out = {}
  for c, name in enumerate(names):
    if np.isfinite(mean[c]):
      out[f"{prefix}/{name}"] = float(mean[c])
      out[f"{prefix}/{name}_std"] = float(std[c])
  out[f"{prefix}/mean"] = float(np.nanmean(mean))
  return out


def run_name(dis_weight: float) -> str:
  return f"dis_{dis_weight:g}"


def run(
  config: ml_collections.ConfigDict, workdir: str, progress: Callable[[str], None] | None = None
) -> dict:
  """Trains one net per λ_dis, evaluates, writes ``W/ablation.json`` and the PNG; returns
  the JSON's contents plus ``embeddings`` (the 2-D embeddings drawn, by row label)."""
  progress = progress or (lambda s: logging.info("%s", s))
  attributes = tuple(config.dataset.attributes)
  if len(attributes) < 2:
    raise ConfigError("config.dataset.attributes: the ablation needs at least two attributes")
  if config.embedding not in ("tsne", "pca"):
    raise ConfigError(f"config.embedding={config.embedding!r}: choose tsne or pca.")
  if config.classifier_training not in CLASSIFIER_TRAINING:
    raise ConfigError(
      f"config.classifier_training={config.classifier_training!r}: choose one "
      f"of {', '.join(CLASSIFIER_TRAINING)}."
    )
  t0 = time.time()
  builder, _ = input_pipeline.load(config)
  size = int(config.image_size)
  train_split = networks.read_split(builder, "train", size, progress)
  split = networks.read_split(builder, config.eval_split, size, progress)
  metrics: dict[str, float] = {}
  embeddings, embed_labels = {}, {}
  for w in config.dis_weights:
    net, params = train_one(config, train_split, w, progress)
    codes, logits = [], []
    bs = 256
    for start in range(0, len(split), bs):
      x = networks.to_float(split.images[start : start + bs])
      c, l = _codes_and_logits(net, params, jnp.asarray(x))
      codes.append([np.asarray(z) for z in c])
      logits.append([[np.asarray(x) for x in row] for row in l])
    codes = [np.concatenate([c[k] for c in codes]) for k in range(len(attributes))]
    logits = [
      [np.concatenate([l[k][m] for l in logits]) for m in range(len(attributes))]
      for k in range(len(attributes))
    ]
    result = evaluate_codes(codes, logits, split, attributes, config)
    metrics.update({f"{run_name(w)}/{k}": v for k, v in result.items()})
    if "expression" in attributes:
      z = codes[attributes.index("expression")]
      progress(f"λ_dis={w:g}: {config.embedding} of {len(z)} expression codes")
      emb = (
        clustering.tsne_2d(z, config.tsne_perplexity, int(config.tsne_steps), config.seed)
        if config.embedding == "tsne"
        else clustering.pca_2d(z)
      )
      embeddings[f"z_expression, lambda_dis={w:g}"] = emb
      # Table III may have been computed on the 2-D embedding of Fig. 4: both are given.
      metrics.update(
        hopkins_by_expression(emb, split, config, f"{run_name(w)}/hopkins_{config.embedding}")
      )
  os.makedirs(workdir, exist_ok=True)
  png = None
  if embeddings:
    embed_labels = {a: split.labels[a] for a in attributes}
    png = os.path.join(workdir, "ablation_embeddings.png")
    plots.write_embedding_png(
      png,
      embeddings,
      embed_labels,
      {a: split.class_names[a] for a in attributes},
      title=f"Ablation I: {config.embedding} of the expression codes ({config.eval_split} split)",
    )
  settings = {
    k: (list(v) if isinstance(v, tuple) else v)
    for k, v in config.to_dict().items()
    if not isinstance(v, dict)
  }
  settings.update(
    {
      k: {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in v.items()}
      for k, v in config.to_dict().items()
      if isinstance(v, dict)
    }
  )
  settings["device"] = f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}"
  settings["seconds"] = round(time.time() - t0, 1)
  result = {
    "metrics": dict(sorted(metrics.items())),
    "settings": settings,
    "images": {"embeddings": png} if png else {},
  }
  with open(os.path.join(workdir, "ablation.json"), "w") as f:
    json.dump(result, f, indent=1)
  result["embeddings"] = embeddings  # not in the JSON: row label → (n, 2)
  return result


def format_table(result: dict, dis_weights: Sequence[float]) -> str:
  """Table III layout: one row per expression cluster, one column per λ_dis (the Hopkins
  statistic of the codes, then of their 2-D embedding), then the leakage measures."""
  m = result["metrics"]
  lines = []
  for group in sorted({k.split("/")[1] for k in m if "/hopkins" in k}):
    names = sorted(
      {k.split("/")[2] for k in m if f"/{group}/" in k and not k.endswith("_std")},
      key=lambda s: (s == "mean", s),
    )
    what = "codes" if group == "hopkins" else group.split("_", 1)[1] + " of the codes"
    lines.append(
      f"{'Hopkins, expression ' + what:<28} "
      + "   ".join(f"λ_dis={w:g}".center(13) for w in dis_weights)
    )
    for name in names:
      cells = []
      for w in dis_weights:
        v = m.get(f"{run_name(w)}/{group}/{name}")
        sd = m.get(f"{run_name(w)}/{group}/{name}_std")
        cells.append(
          f"{v:.2f} ± {sd:.2f}" if sd is not None else (f"{v:.2f}" if v is not None else "-")
        )
      lines.append(f"{name:<28} " + "   ".join(c.center(13) for c in cells))
    lines.append("")
  extra = sorted({k.split("/", 1)[1] for k in m if "/knn_acc/" in k or "/latent_acc/" in k})
  lines.append(f"{'':<40}" + "".join(f"λ_dis={w:g}".rjust(12) for w in dis_weights))
  for key in extra:
    lines.append(f"{key:<40}" + "".join(f"{m[f'{run_name(w)}/{key}']:12.3f}" for w in dis_weights))
  return "\n".join(lines)


FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "workdir", None, "Where ablation.json and the embedding PNG go.", flag_values=FLAGS
)
config_flags.DEFINE_config_file(
  "config", None, "The config file: configs/ablation.py.", flag_values=FLAGS, lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"], flag_values=FLAGS)


def main(argv):
  del argv  # no positional arguments (cli.run refuses them)
  logging.set_verbosity(logging.INFO)
  t0 = time.time()

  def progress(msg):
    print(f"[ablation {time.time() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

  result = run(FLAGS.config, FLAGS.workdir, progress)
  print(format_table(result, FLAGS.config.dis_weights))
  print(f"wrote {os.path.join(FLAGS.workdir, 'ablation.json')}")
  if result["images"]:
    print(f"wrote {result['images']['embeddings']}")


if __name__ == "__main__":
  cli.run(main, FLAGS)
