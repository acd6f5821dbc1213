"""Ablation I (Eq. 10): the losses against numpy, which parameters each loss moves, and the
command end to end on the tiny synthetic faces."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

import importlib.util

from attrdis import ablation
from attrdis.evaluation import clustering
from attrdis.evaluation import leakage

_spec = importlib.util.spec_from_file_location(
  "ablation_config",
  os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "ablation.py"
  ),
)
ablation_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation_config)


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_losses_match_numpy():
  rng = np.random.default_rng(0)
  sizes = (4, 3, 5)
  b = 6
  latent = [
    [jnp.asarray(rng.normal(size=(b, n)), jnp.float32) for n in sizes] for _ in sizes
  ]  # latent[k][m] = C_m(z_k)
  labels = np.stack([rng.integers(0, n, b) for n in sizes], axis=1)
  cls = np.mean([-_log_softmax(latent[k][k])[np.arange(b), labels[:, k]].mean() for k in range(3)])
  assert float(ablation.latent_classification_loss(latent, jnp.asarray(labels))) == pytest.approx(
    cls, rel=1e-5
  )
  # Eq. 4 without z_0: CE(uniform, p) = -mean_c log p_c, over heads m != k, then codes k.
  dis = np.mean(
    [
      np.mean([-_log_softmax(latent[k][m]).mean(-1).mean() for m in range(3) if m != k])
      for k in range(3)
    ]
  )
  assert float(ablation.disentanglement_loss(latent)) == pytest.approx(dis, rel=1e-5)
  # Uniform posteriors reach the minimum, log|m|, of each term.
  flat = [[jnp.zeros((b, n)) for n in sizes] for _ in sizes]
  expected = np.mean([np.mean([math.log(sizes[m]) for m in range(3) if m != k]) for k in range(3)])
  assert float(ablation.disentanglement_loss(flat)) == pytest.approx(expected, rel=1e-6)
  assert float(ablation.disentanglement_loss(latent[:1])) == 0.0


def _one_step(mode, dis_weight):
  net = ablation.AblationNet((3, 2), hidden=8, code_dim=4)
  params = net.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))["params"]
  tx = optax.sgd(0.1)
  step = ablation.make_train_step(net, tx, dis_weight, mode)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(8, 4, 4, 3)), jnp.float32)
  y = jnp.asarray(np.stack([rng.integers(0, 3, 8), rng.integers(0, 2, 8)], 1), jnp.int32)
  new, _, metrics = step(params, tx.init(params), x, y)
  return params, new, metrics


def _changed(a, b):
  return any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_which_parameters_each_loss_moves():
  # 'images': the heads and image paths learn from L_cls^c only, so λ_dis cannot move them;
  # the encoders learn from Eq. 10, so λ_dis does.
  p0, with_dis, m1 = _one_step("images", 1.0)
  _, without, m0 = _one_step("images", 0.0)
  assert float(m1["cls_c"]) > 0 and float(m1["dis"]) == pytest.approx(float(m0["dis"]))
  for group in p0:
    assert _changed(p0[group], with_dis[group]), group
    if group.startswith("encoders_"):
      assert _changed(with_dis[group], without[group]), group
    else:
      assert not _changed(with_dis[group], without[group]), group
  # 'joint': Eq. 10 moves the heads too (and nothing trains the unused image paths).
  p0, with_dis, m = _one_step("joint", 1.0)
  _, without, _ = _one_step("joint", 0.0)
  assert float(m["cls_c"]) == 0.0
  assert _changed(with_dis["heads_0"], without["heads_0"])
  assert not _changed(p0["features_0"], with_dis["features_0"])
  with pytest.raises(ablation.ConfigError):
    ablation.make_train_step(ablation.AblationNet((3,), 8, 4), optax.sgd(0.1), 1.0, "bad")


def test_command_end_to_end(synthetic_data_dir, tmp_path):
  config = ablation_config.get_config()
  config.dataset.builder_config = "tiny"
  config.dataset.data_dir = synthetic_data_dir
  config.image_size = 16
  config.model.hidden = 16
  config.num_train_steps = 30
  config.hopkins_draws = 3
  config.tsne_steps = 60
  w = str(tmp_path / "abl")
  result = ablation.run(config, w, progress=lambda s: None)
  saved = json.load(open(os.path.join(w, "ablation.json")))
  assert saved["metrics"] == pytest.approx(result["metrics"])
  m = result["metrics"]
  assert saved["settings"]["dis_weights"] == [1.0, 0.0]
  assert saved["settings"]["model"]["code_dim"] == 8
  classes = ("neutral", "smile", "surprise", "anger", "sadness")
  for run in ("dis_1", "dis_0"):
    for c in classes:
      assert 0 <= m[f"{run}/hopkins/{c}"] <= 1 and m[f"{run}/hopkins/{c}_std"] >= 0
    assert m[f"{run}/hopkins/mean"] == pytest.approx(
      np.mean([m[f"{run}/hopkins/{c}"] for c in classes])
    )
    for a in ("expression", "illumination"):
      for z in ("expression", "illumination"):
        assert 0 <= m[f"{run}/knn_acc/{a}/z_{z}"] <= 1
        assert 0 <= m[f"{run}/latent_acc/C_{a}/z_{z}"] <= 1
        assert 0 <= m[f"{run}/entropy/C_{a}/z_{z}"] <= math.log(5) + 1e-5
    for b in ("identity", "gaze", "color"):  # what else the codes carry
      assert 0 <= m[f"{run}/knn_acc/{b}/z_expression"] <= 1
    # The embedding's Hopkins statistic is the evaluator's helper on the drawn embedding.
    emb = result["embeddings"][f"z_expression, lambda_dis={run[4:]}"]
    assert emb.shape == (20, 2)
    mean, _ = clustering.hopkins_per_class(emb, split_expression(synthetic_data_dir), 5, 3, 0, 0.1)
    for c, name in enumerate(classes):
      assert m[f"{run}/hopkins_tsne/{name}"] == pytest.approx(mean[c], abs=1e-6)
  png = os.path.join(w, "ablation_embeddings.png")
  assert result["images"]["embeddings"] == png and Image.open(png).size[0] > 300
  table = ablation.format_table(result, config.dis_weights)
  assert "λ_dis=1" in table and "λ_dis=0" in table and "tsne of the codes" in table
  row = next(l for l in table.splitlines() if l.startswith("smile"))
  assert f"{m['dis_1/hopkins/smile']:.2f} ± {m['dis_1/hopkins/smile_std']:.2f}" in row


def split_expression(data_dir):
  """The expression labels of the tiny test split, in record order."""
  from attrdis_datasets.synthetic_faces import synthetic_faces_dataset_builder as sf

  source = sf.Builder(config="tiny", data_dir=data_dir, file_format="array_record").as_data_source(
    "test"
  )
  return np.array([source[i]["expression"] for i in range(len(source))])


def test_evaluate_codes_bookkeeping():
  """Per-class Hopkins and k-NN of the run metrics are the evaluator's helpers on the same
  codes; latent accuracy and entropy come from the given logits."""
  rng = np.random.default_rng(5)
  n = 30
  labels = {"expression": np.repeat(np.arange(3), 10), "illumination": np.tile(np.arange(2), 15)}
  split = type(
    "S",
    (),
    {"labels": labels, "class_names": {"expression": ("a", "b", "c"), "illumination": ("x", "y")}},
  )()
  codes = [rng.normal(size=(n, 4)).astype(np.float32) for _ in range(2)]
  logits = [[rng.normal(size=(n, 3)), rng.normal(size=(n, 2))] for _ in range(2)]
  config = ablation_config.get_config()
  config.hopkins_draws = 2
  out = ablation.evaluate_codes(codes, logits, split, ("expression", "illumination"), config)
  mean, std = clustering.hopkins_per_class(codes[0], labels["expression"], 3, 2, 0, 0.1)
  assert out["hopkins/b"] == pytest.approx(mean[1]) and out["hopkins/b_std"] == pytest.approx(
    std[1]
  )
  assert out["knn_acc/illumination/z_expression"] == pytest.approx(
    leakage.knn_accuracy(codes[0], labels["illumination"], 5)
  )
  assert out["latent_acc/C_illumination/z_expression"] == pytest.approx(
    np.mean(np.argmax(logits[0][1], -1) == labels["illumination"])
  )
  p = np.exp(_log_softmax(logits[1][0]))
  assert out["entropy/C_expression/z_illumination"] == pytest.approx(
    np.mean(-(p * np.log(p)).sum(-1)), rel=1e-5
  )
