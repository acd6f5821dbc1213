"""The evaluator: each metric against a hand or brute-force computation, and the command end
to end on one tiny synthetic checkpoint (trained once for the module)."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from attrdis import checkpoints
from attrdis import cli
from attrdis import cluster_metrics
from attrdis import errors
from attrdis import evaluate as ev
from attrdis import input_pipeline
from attrdis import sampling
from attrdis import train
from attrdis.evaluation import clustering
from attrdis.evaluation import context
from attrdis.evaluation import ground_truth
from attrdis.evaluation import leakage
from attrdis.evaluation import networks
from attrdis.evaluation import plots
from attrdis.evaluation import reconstruction
from attrdis.evaluation import suite
from attrdis.evaluation import synthesis
from attrdis.evaluation import train_networks
from attrdis.synthetic import render
from tiny import tiny_config

ATTRS = ("identity", "expression", "illumination")


@pytest.fixture(scope="module")
def workdir(synthetic_data_dir, tmp_path_factory):
  config = tiny_config(attributes=ATTRS)
  config.dataset.data_dir = synthetic_data_dir
  config.num_train_steps = 2
  w = str(tmp_path_factory.mktemp("evalw"))
  train.train_and_evaluate(config, w)
  return w


@pytest.fixture(scope="module")
def trained(workdir):
  return checkpoints.load_trained(workdir)


@pytest.fixture(scope="module")
def evaluated(workdir):
  """The command, run once: (exit status, its JSON)."""
  out = os.path.join(workdir, "eval", "result.json")
  rc = cli.call(
    ev.main,
    ev.FLAGS,
    [
      f"--workdir={workdir}",
      "--classifier_steps=3",
      "--num_pairs=8",
      "--hopkins_draws=2",
      "--batch_size=8",
      f"--out={out}",
    ],
  )
  with open(out) as f:
    return rc, json.load(f)


# ----------------------------------------------------------------------------------------
# Metric helpers against hand computations.


def test_image_errors_match_numpy():
  rng = np.random.default_rng(0)
  a = rng.uniform(-1, 1, (3, 4, 5, 3)).astype(np.float32)
  b = rng.uniform(-1, 1, (3, 4, 5, 3)).astype(np.float32)
  l1, psnr = reconstruction.image_errors(a, b)
  for i in range(3):
    d = (a[i].astype(np.float64) - b[i]) / 2
    assert l1[i] == pytest.approx(np.abs(d).mean(), rel=1e-5)
    assert psnr[i] == pytest.approx(10 * math.log10(1 / (d**2).mean()), rel=1e-5)
  l1, psnr = reconstruction.image_errors(a, a)
  assert np.all(l1 == 0) and np.all(psnr == pytest.approx(100.0))
  # A uniform error of 0.1 (in [0, 1] units) is 20 dB.
  l1, psnr = reconstruction.image_errors(np.zeros((1, 2, 2, 3)), np.full((1, 2, 2, 3), 0.2))
  assert l1[0] == pytest.approx(0.1) and psnr[0] == pytest.approx(20.0, abs=1e-4)


def test_choose_pairs_are_seeded_and_cross_identity():
  ident = np.array([0, 0, 0, 1, 1, 2])
  s, t = context.choose_pairs(ident, 50, seed=3)
  assert len(s) == len(t) == 50
  assert np.all(ident[s] != ident[t])
  s2, t2 = context.choose_pairs(ident, 50, seed=3)
  np.testing.assert_array_equal(s, s2)
  np.testing.assert_array_equal(t, t2)
  with pytest.raises(context.EvaluationError):
    context.choose_pairs(np.zeros(4, int), 2)


def test_attribute_sets():
  assert context.attribute_sets(("a", "b", "c")) == [
    ("a",),
    ("b",),
    ("c",),
    ("a", "b"),
    ("a", "c"),
    ("b", "c"),
  ]


def test_transfer_accuracy_bookkeeping():
  src = {"e": np.array([0, 0, 1, 2]), "i": np.array([1, 1, 1, 1]), "g": np.array([0, 1, 2, 0])}
  tgt = {"e": np.array([1, 0, 2, 0]), "i": np.array([0, 2, 1, 3]), "g": np.array([2, 2, 2, 2])}
  read = {
    "e": np.array([1, 2, 2, 2]),  # e transferred: pairs 0, 2, 3 differ; right on 0, 2
    "i": np.array([1, 2, 0, 1]),  # i kept: pairs 0, 1, 3 differ; source's on 0 and 3
    "g": np.array([2, 2, 2, 2]),
  }  # g kept: pairs 0, 1, 3 differ; never the source's
  out = ground_truth.transfer_accuracy(read, src, tgt, ("e",), prefix="x/")
  assert out["x/acc/e"] == pytest.approx(2 / 3)
  assert out["x/acc/i"] == pytest.approx(2 / 3)
  assert out["x/acc/g"] == 0.0
  assert out["x/acc_transferred"] == pytest.approx(2 / 3)
  assert out["x/acc_kept"] == pytest.approx(1 / 3)
  # Discounting the readers' errors: only pairs whose true image reads right count.
  truth = {
    "e": np.array([1, 0, 0, 0]),  # right on pairs 0, 3 (of 0, 2, 3)
    "i": np.array([1, 1, 1, 1]),  # right on 0, 1, 3
    "g": np.array([0, 1, 2, 0]),
  }  # right on 0, 1, 3
  out = ground_truth.transfer_accuracy(read, src, tgt, ("e",), truth_read=truth)
  assert out["acc/e"] == pytest.approx(2 / 3)  # unchanged
  assert out["acc_readable/e"] == pytest.approx(1 / 2)  # pair 0 right, pair 3 wrong
  assert out["acc_readable/i"] == pytest.approx(2 / 3)
  assert out["acc_readable/g"] == 0.0
  assert out["acc_transferred_readable"] == pytest.approx(1 / 2)
  assert out["acc_kept_readable"] == pytest.approx(1 / 3)
  # An attribute on which every pair agrees says nothing and is left out.
  same = ground_truth.transfer_accuracy(
    {"e": np.array([5, 5])}, {"e": np.array([1, 2])}, {"e": np.array([1, 2])}, ("e",)
  )
  assert same == {}


def test_skill_and_ceiling_ratio_by_hand():
  assert ground_truth.skill(0.02, 0.08) == pytest.approx(0.75)
  assert ground_truth.skill(0.08, 0.08) == 0.0
  assert ground_truth.skill(0.1, 0.05) == pytest.approx(-1.0)
  assert math.isnan(ground_truth.skill(0.1, 0.0))
  rng = np.random.default_rng(0)
  truth = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
  src = rng.uniform(-1, 1, truth.shape).astype(np.float32)
  pred = truth + 0.25 * (src - truth)  # a quarter of the source's error left everywhere
  out = ground_truth.ground_truth_errors(pred, truth, src, src, "a")
  assert out["gt/a/skill"] == pytest.approx(0.75, rel=1e-5)
  assert out["gt/a/l1"] == pytest.approx(0.25 * out["gt/a/l1_source"], rel=1e-5)
  # Changed region: the truth leaves the source on one pixel of one image only; there the
  # transfer moves half way, elsewhere it adds an error of 0.05 that the source does not have.
  src = np.zeros((2, 2, 2, 3), np.float32)
  truth = src.copy()
  truth[1, 0, 1] = [0.8, 0.0, 0.0]  # [-1, 1] units: 0.4 in [0, 1] on channel 0
  pred = truth + 0.1  # 0.05 in [0, 1] everywhere
  pred[1, 0, 1] = [0.4, 0.0, 0.0]
  out = ground_truth.ground_truth_errors(pred, truth, src, src, "b")
  assert out["gt/b/changed_fraction"] == pytest.approx(1 / 8)
  assert out["gt/b/l1_changed_source"] == pytest.approx(0.4 / 3, rel=1e-6)
  assert out["gt/b/l1_changed"] == pytest.approx(0.2 / 3, rel=1e-6)
  assert out["gt/b/skill_changed"] == pytest.approx(0.5, rel=1e-5)
  assert out["gt/b/skill"] < 0  # the whole image: worse than the source
  # Nothing changes: no changed-region errors.
  same = ground_truth.ground_truth_errors(src + 0.1, src, src, src, "c")
  assert same["gt/c/changed_fraction"] == 0.0 and "gt/c/skill_changed" not in same
  metrics = {
    "transfer/s/acc/b": 0.45,
    "transfer/s/truth_acc/b": 0.9,
    "transfer/s/acc/c": 0.5,
    "transfer/s/truth_acc/c": 0.0,
    "transfer/s/acc_kept": 0.3,
  }
  assert ground_truth.of_ceiling(metrics, "transfer/s/") == {"b": pytest.approx(0.5)}


def test_linear_probe_separates_what_is_linear_and_nothing_else():
  """Labels that are a linear function of the features are learned (test accuracy 1 on new
  points of the same rule); labels independent of the features stay near chance."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 4, 4, 2)).astype(np.float32)
  w = rng.normal(size=(32, 3))
  y = np.argmax(x.reshape(600, -1) @ w, axis=1)
  predict = leakage.fit_linear_probe(x[:400], y[:400], 3)
  assert np.mean(predict(x[400:]) == y[400:]) > 0.9
  noise = rng.integers(0, 3, 600)
  predict = leakage.fit_linear_probe(x[:400], noise[:400], 3)
  # 200 test points, chance 1/3: 0.55 is more than 6 standard deviations above chance.
  assert np.mean(predict(x[400:]) == noise[400:]) < 0.55


def test_per_target_accuracy():
  pred = np.array([[0, 1, 1], [0, 2, 2], [1, 1, 2], [0, 0, 2]])
  np.testing.assert_allclose(synthesis.per_target_accuracy(pred, 3), [0.75, 0.5, 0.75])
  with pytest.raises(ValueError):
    synthesis.per_target_accuracy(pred, 4)


def test_hopkins_per_class_equals_direct_calls():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(40, 2, 3)).astype(np.float32)
  labels = np.array([0] * 25 + [2] * 14 + [1])  # class 1 has one point: no statistic
  mean, std = clustering.hopkins_per_class(x, labels, 4, draws=3, seed=7, sample_fraction=0.2)
  for c in (0, 2):
    hs = [
      cluster_metrics.hopkins_statistic(
        x[labels == c].reshape(-1, 6), key=7 + r, sample_fraction=0.2
      )
      for r in range(3)
    ]
    assert mean[c] == pytest.approx(np.mean(hs), abs=1e-6)
    assert std[c] == pytest.approx(np.std(hs), abs=1e-6)
  assert np.isnan(mean[1]) and np.isnan(mean[3])


def test_pca_matches_numpy_svd_up_to_sign():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(30, 5)) @ np.diag([5.0, 3.0, 1.0, 0.5, 0.1]) + 4.0
  y = clustering.pca_2d(x)
  xc = x - x.mean(0)
  _, _, vt = np.linalg.svd(xc, full_matrices=False)
  for j in range(2):
    ref = xc @ vt[j]
    sign = np.sign(vt[j][np.argmax(np.abs(vt[j]))])  # the largest loading made positive
    np.testing.assert_allclose(y[:, j], sign * ref, atol=1e-3)
  assert y[:, 0].var() > y[:, 1].var()


def test_knn_accuracy_matches_brute_force():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(25, 4)).astype(np.float32)
  labels = rng.integers(0, 3, 25)
  for k in (1, 2, 5):
    correct = 0
    for i in range(25):
      d = np.linalg.norm(x - x[i], axis=1)
      d[i] = np.inf
      order = np.argsort(d, kind="stable")[:k]
      votes = labels[order]
      counts = np.bincount(votes, minlength=3)
      tied = np.flatnonzero(counts == counts.max())
      pred = next(v for v in votes if v in tied)
      correct += pred == labels[i]
    assert leakage.knn_accuracy(x, labels, k) == pytest.approx(correct / 25)
  # Codes that carry the label perfectly:
  assert leakage.knn_accuracy(np.repeat(np.eye(3), 4, axis=0), np.repeat(np.arange(3), 4)) == 1.0


def test_tsne_calibration_gradient_and_separation():
  rng = np.random.default_rng(4)
  x = np.concatenate([rng.normal(size=(20, 6)) + 12 * c for c in range(3)]).astype(np.float32)
  d2 = np.square(x[:, None] - x[None]).sum(-1)
  p, h = clustering.tsne_conditional_p(jnp.asarray(d2), 10.0)
  p = np.asarray(p, np.float64)
  np.testing.assert_allclose(np.diag(p), 0.0)
  np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
  # Each row's entropy (recomputed here) is log(perplexity).
  ent = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1)
  np.testing.assert_allclose(ent, math.log(10.0), atol=1e-3)
  np.testing.assert_allclose(h, ent, atol=1e-4)
  # The closed-form gradient is the gradient of the KL divergence.
  joint = jnp.asarray((p + p.T) / (2 * len(x)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(60, 2)), jnp.float32)
  np.testing.assert_allclose(
    clustering.tsne_gradient(y, joint), jax.grad(clustering.tsne_kl)(y, joint), rtol=1e-3, atol=1e-6
  )
  emb = clustering.tsne_2d(x, perplexity=10, steps=300)
  assert emb.shape == (60, 2) and np.all(np.isfinite(emb))
  assert leakage.knn_accuracy(emb, np.repeat(np.arange(3), 20), 5) == 1.0


def test_scatter_panel_and_embedding_png(tmp_path):
  colours = plots.class_colours(3)
  xy = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
  img = np.asarray(plots.scatter_panel(xy, [0, 1, 2], colours, size=50, radius=1))
  pos = plots.panel_positions(xy, 50)
  for (x, y), c in zip(pos, colours):
    assert tuple(img[y, x]) == c
  # y points up: the point at y = 1 is drawn above the one at y = 0.
  assert pos[1][1] < pos[0][1] and pos[2][0] > pos[0][0]
  assert len(set(plots.class_colours(20))) == 20
  path = str(tmp_path / "e.png")
  size = plots.write_embedding_png(
    path,
    {"a": xy, "b": xy},
    {"l": np.array([0, 1, 5])},
    {"l": [f"c{i}" for i in range(6)]},
    panel=60,
  )
  assert Image.open(path).size == size and size[1] > 2 * 60


# ----------------------------------------------------------------------------------------
# Model kernels on the tiny checkpoint against manual loops.


def test_entropy_and_latent_accuracy_match_a_manual_loop(trained, synthetic_data_dir):
  config, models, params = trained.config, trained.models, trained.params
  builder = input_pipeline.get_builder(config.dataset)
  test = networks.read_split(builder, "test", config.image_size)
  labels = np.stack([test.labels[a] for a in ATTRS], axis=1)
  enc = context.encode_split(models, params, test.images, labels, batch_size=8)  # 20 = 8+8+4
  assert len(enc.codes) == 4 and all(len(z) == 20 for z in enc.codes)
  x = jnp.asarray(networks.to_float(test.images))
  encode = jax.jit(lambda p, x: sampling.encode(models, p, x))
  decode = jax.jit(lambda p, c: sampling.decode(models, p, c))
  latent = jax.jit(lambda p, z: models.cls.apply({"params": p}, z, method="latent"))
  codes = encode(params["gen"], x)
  for k in range(4):
    np.testing.assert_allclose(enc.codes[k], codes[k], atol=1e-5)
  np.testing.assert_allclose(enc.recon, decode(params["gen"], codes), atol=1e-5)
  for k in range(4):
    all_logits = latent(params["cls"], codes[k])  # [C_m(z_k) for m]
    for m in range(3):
      logits = np.asarray(all_logits[m], np.float64)
      p = np.exp(logits - logits.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      entropy = -np.sum(p * np.log(np.maximum(p, 1e-300)), axis=-1).mean()
      assert enc.entropy[:, m, k].mean() == pytest.approx(entropy, abs=1e-5)
      assert enc.correct[:, m, k].mean() == pytest.approx(
        float(np.mean(np.argmax(logits, -1) == labels[:, m]))
      )
  # Transfer codes decode like the sampling module's transfer.
  src, tgt = np.array([0, 3, 5]), np.array([12, 15, 19])
  swapped = context.swap_codes(enc.codes, src, tgt, [1])
  out = context.decode_codes(models, params["gen"], swapped, batch_size=8)
  manual = decode(
    params["gen"], sampling.transfer_codes([z[src] for z in codes], [z[tgt] for z in codes], [1])
  )
  np.testing.assert_allclose(out, manual, atol=1e-5)


# ----------------------------------------------------------------------------------------
# The command end to end.


def test_command_writes_every_metric(evaluated, workdir):
  rc, result = evaluated
  assert rc == 0
  m, settings = result["metrics"], result["settings"]
  assert settings["step"] == 2 and settings["attributes"] == list(ATTRS)
  assert settings["transfer"] == "mean_code" and settings["fid_weights"] is None
  assert any("FID skipped" in n for n in result["notes"])
  for k, v in m.items():
    assert isinstance(v, float) and math.isfinite(v), k
  codes = ATTRS + ("rest",)
  log_k = {"identity": math.log(6), "expression": math.log(5), "illumination": math.log(5)}
  for a in ATTRS:
    for z in codes:
      assert 0 <= m[f"entropy/C_{a}/z_{z}"] <= log_k[a] + 1e-5
      assert (
        (0 <= m[f"latent_acc/C_{a}/z_{z}"] <= 1)
        if a != "identity"
        else (f"latent_acc/C_{a}/z_{z}" not in m)
      )
      assert 0 <= m[f"knn_acc/{a}/z_{z}"] <= 1
  assert 0 <= m["entropy/off_diagonal_normalized"] <= 1 + 1e-6
  for c in ("neutral", "smile", "surprise", "anger", "sadness"):
    assert 0 <= m[f"hopkins/expression/{c}"] <= 1
    assert 0 <= m[f"synthesis/acc/{c}"] <= 1
  assert m["synthesis/num_sources"] == 4  # tiny test split: 2 identities x 2 neutral images
  assert m["synthesis/acc_mean"] == pytest.approx(
    np.mean([m[f"synthesis/acc/{c}"] for c in ("neutral", "smile", "surprise", "anger", "sadness")])
  )
  for s in (
    "identity",
    "expression",
    "illumination",
    "identity+expression",
    "identity+illumination",
    "expression+illumination",
  ):
    for suffix in ("", "_source", "_target"):
      assert 0 <= m[f"gt/{s}/l1{suffix}"] <= 1
      assert m[f"gt/{s}/psnr{suffix}"] > 0
    assert 0 <= m[f"transfer/{s}/acc_kept"] <= 1
    assert 0 <= m[f"transfer/{s}/truth_acc_kept"] <= 1
    assert m[f"gt/{s}/skill"] == pytest.approx(
      1 - m[f"gt/{s}/l1"] / m[f"gt/{s}/l1_source"], rel=1e-6
    )
    for b in s.split("+"):
      if f"transfer/{s}/truth_acc/{b}" in m and m[f"transfer/{s}/truth_acc/{b}"] > 0:
        assert m[f"transfer/{s}/of_ceiling/{b}"] == pytest.approx(
          m[f"transfer/{s}/acc/{b}"] / m[f"transfer/{s}/truth_acc/{b}"]
        )
  # The "all" rows: means over the sets (minimum for the _min rows).
  sets = [
    k.split("/")[1]
    for k in m
    if k.startswith("gt/") and k.endswith("/skill") and not k.startswith("gt/all/")
  ]
  assert len(sets) == 6
  for key in ("acc_transferred", "acc_kept", "truth_acc_transferred", "truth_acc_kept"):
    assert m[f"transfer/all/{key}"] == pytest.approx(
      np.mean([m[f"transfer/{s}/{key}"] for s in sets if f"transfer/{s}/{key}" in m])
    )
  for key in ("l1", "skill", "changed_fraction"):
    assert m[f"gt/all/{key}"] == pytest.approx(np.mean([m[f"gt/{s}/{key}"] for s in sets]))
  ratios = [v for k, v in m.items() if "/of_ceiling/" in k]
  assert m["transfer/all/of_ceiling_transferred_min"] >= min(ratios) - 1e-12
  assert min(
    m["transfer/all/of_ceiling_transferred_min"], m["transfer/all/of_ceiling_kept_min"]
  ) == pytest.approx(min(ratios))
  assert -1 <= m["intensity/corr"] <= 1 and -1 <= m["intensity/corr_truth"] <= 1
  for a in ("expression", "illumination"):
    for z in codes:
      assert 0 <= m[f"linear_probe/{a}/z_{z}"] <= 1
    for slots in (f"z_{a}", f"z_{a}+z_rest", "z_rest"):
      assert 0 <= m[f"source_of/{a}/{slots}"] <= 1
    assert 0 <= m[f"recon/read/{a}"] <= 1 and 0 <= m[f"recon/read_real/{a}"] <= 1
    # The readers on the real test images are the evaluation networks' own test accuracy.
    assert m[f"recon/read_real/{a}"] == pytest.approx(m[f"eval_classifier/{a}/acc"])
  assert "linear_probe/identity/z_rest" not in m
  for k in ("expression/acc", "illumination/acc", "gaze/acc", "color/acc", "identity/acc"):
    assert 0 <= m[f"eval_classifier/{k}"] <= 1
  for kind in ("entropy", "embeddings", "synthesis", "transfer"):
    path = os.path.join(workdir, "eval", f"{kind}_2.png")
    assert settings["images"][kind] == path and Image.open(path).size[0] > 50


def test_ground_truth_errors_recomputed_by_hand(evaluated, workdir, trained):
  """gt/<attr>/l1_source and psnr_target from the renderer and numpy, on the same pairs."""
  _, result = evaluated
  m = result["metrics"]
  config = trained.config
  builder = input_pipeline.get_builder(config.dataset)
  source = builder.as_data_source("test")
  records = [source[i] for i in range(len(source))]
  ident = np.array([r["identity"] for r in records])
  src, tgt = context.choose_pairs(ident, 8, 0)
  real = np.stack([r["image"] for r in records]).astype(np.float64) / 127.5 - 1
  for attr in ("expression", "illumination"):
    truth = (
      np.stack(
        [
          render.transfer_ground_truth(
            render.factors_from_record(records[i]),
            render.factors_from_record(records[j]),
            [attr],
            16,
          )
          for i, j in zip(src, tgt)
        ]
      ).astype(np.float64)
      / 127.5
      - 1
    )
    l1 = np.mean([np.abs(real[i] - t).mean() / 2 for i, t in zip(src, truth)])
    mse = [np.mean(((real[j] - t) / 2) ** 2) for j, t in zip(tgt, truth)]
    psnr = np.mean([10 * math.log10(1 / max(e, 1e-10)) for e in mse])
    assert m[f"gt/{attr}/l1_source"] == pytest.approx(l1, rel=1e-4)
    assert m[f"gt/{attr}/psnr_target"] == pytest.approx(psnr, rel=1e-4)


def test_evaluation_classifiers_are_checkpointed_and_reused(evaluated, workdir, trained, capsys):
  _, result = evaluated
  meta = json.load(open(os.path.join(workdir, "eval_classifiers", "meta.json")))
  assert meta["spec"]["steps"] == 3 and meta["spec"]["image_size"] == 16
  assert [t["name"] for t in meta["spec"]["tasks"]] == [
    "expression",
    "illumination",
    "gaze",
    "color",
    "intensity",
    "identity_params",
  ]
  assert meta["test"]["expression/acc"] == result["metrics"]["eval_classifier/expression/acc"]
  opts = context.Options(classifier_steps=3, batch_size=8)

  def no_training():
    raise AssertionError("the cached evaluation classifiers were not reused")

  ctx = context.Context(trained, workdir, opts, progress=lambda s: None)
  tasks = networks.default_tasks("synthetic_faces", ctx.test, ATTRS)
  model = networks.load_or_train(
    networks.directory(workdir),
    "synthetic_faces",
    "tiny",
    16,
    tasks,
    no_training,
    ctx.test,
    steps=3,
    batch_size=32,
  )
  # Its test metrics are recomputed identically from its predictions.
  again = networks.test_metrics(model, ctx.test)
  for k, v in meta["test"].items():
    assert again[k] == pytest.approx(v, abs=1e-6, nan_ok=True)
  pred = model.classes(ctx.test.images)
  assert meta["test"]["color/acc"] == pytest.approx(
    np.mean(pred["color"] == ctx.test.labels["color"])
  )
  # The command that trains them ahead of an evaluation finds them too, and prints their
  # test metrics.
  assert (
    cli.call(train_networks.main, train_networks.FLAGS, [f"--workdir={workdir}", "--steps=3"])
    == errors.EXIT_OK
  )
  printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
  assert float(printed["color/acc"]) == pytest.approx(meta["test"]["color/acc"], abs=1e-4)
  # A bad command line: exit status 2 and one line.
  assert (
    cli.call(train_networks.main, train_networks.FLAGS, [f"--workdir={workdir}", "--steps=0"])
    == errors.EXIT_USAGE
  )
  assert capsys.readouterr().err.strip() == (
    "error: flag --steps=0: 0 is not a positive integer (see --help)"
  )


def test_identity_prototypes_by_hand():
  reg = np.array([[0.0, 0.0], [0.2, 0.0], [5.0, 5.0], [5.0, 4.0], [0.1, 0.3]])
  ids = np.array([7, 7, 9, 9, 7])
  got_ids, protos = networks.identity_prototypes(reg, ids)
  np.testing.assert_array_equal(got_ids, [7, 9])
  np.testing.assert_allclose(protos, [[0.1, 0.1], [5.0, 4.5]])
  np.testing.assert_array_equal(
    networks.identify(np.array([[4.0, 4.0], [1.0, 0.0]]), got_ids, protos), [9, 7]
  )


def test_reference_transfer_mode_and_fid_wiring(trained, workdir):
  """Table IV with target images; FID through a stand-in feature extractor that records what
  it is given (the real Inception is tested in test_fid.py): translated vs real test images."""
  seen = []

  def features(images, value_range=(0.0, 1.0)):
    assert value_range == (-1, 1)
    seen.append(np.asarray(images))
    return np.asarray(images, np.float64).reshape(len(images), -1)[:, :7] + 0.5

  opts = context.Options(
    transfer="reference",
    classifier_steps=3,
    batch_size=8,
    write_images=False,
    fid_weights="stand-in",
  )
  ctx = context.Context(trained, workdir, opts, progress=lambda s: None, inception=features)
  m = synthesis.synthesis(ctx)
  assert m["synthesis/num_sources"] == 4
  assert 0 <= m["synthesis/acc_mean"] <= 1 and m["synthesis/acc_std"] >= 0
  assert len(seen) == 6  # five target expressions, then the real test images
  translated, real = np.concatenate(seen[:5]), seen[5]
  assert translated.shape == (20, 16, 16, 3) and real.shape == (20, 16, 16, 3)
  np.testing.assert_allclose(real, networks.to_float(ctx.test.images))
  from attrdis import fid  # pylint: disable=g-import-not-at-top

  assert m["synthesis/fid"] == pytest.approx(
    fid.fid_from_features(features(translated, (-1, 1)), features(real, (-1, 1))), rel=1e-9
  )


def test_periodic_eval(trained, workdir, evaluated):
  out = suite.periodic_eval(
    trained.config, workdir, trained.models, trained.params, trained.step, num_pairs=4, batch_size=8
  )
  assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
  for key in (
    "recon/l1",
    "entropy/C_expression/z_identity",
    "latent_acc/C_expression/z_rest",
    "hopkins/expression/mean",
    "gt/expression/l1",
    "gt/illumination/l1_source",
  ):
    assert key in out
  assert not any(k.startswith(("synthesis/", "eval_classifier/")) for k in out)
  # The same functions as the command's: on the command's pairs (8, seed 0) every number but
  # Hopkins' (one draw here, two there) is the command's, and no other kind of metric comes.
  out = suite.periodic_eval(
    trained.config, workdir, trained.models, trained.params, trained.step, num_pairs=8, batch_size=8
  )
  full = evaluated[1]["metrics"]
  assert {k.split("/")[0] for k in out} == {"recon", "entropy", "latent_acc", "hopkins", "gt"}
  for k, v in out.items():
    if not k.startswith("hopkins/"):
      assert v == full[k], k
  single = [k for k in full if k.startswith("gt/") and k.split("/")[1] in ATTRS]
  assert sorted(k for k in out if k.startswith("gt/")) == sorted(single)


def test_metric_lists():
  assert set(suite.FULL) | set(suite.PERIODIC) == set(suite.METRICS)
  assert suite.applicable(suite.FULL, "labelled_images") == [
    n for n in suite.FULL if n not in ("ground_truth", "intensity")
  ]
  assert suite.applicable(suite.PERIODIC, "synthetic_faces") == list(suite.PERIODIC)
  assert suite.applicable(suite.PERIODIC, "rafd") == ["reconstruction", "entropy", "hopkins"]
  with pytest.raises(context.EvaluationError, match="unknown metric 'fid'"):
    suite.applicable(["reconstruction", "fid"], "rafd")
  # The command's module keeps the library names it always had.
  assert ev.evaluate is suite.evaluate and ev.Options is context.Options


def test_command_errors_are_one_line(tmp_path, workdir, capsys):
  """User errors end with one line and status 1, a bad command line with status 2."""

  def evaluate(*args):
    return cli.call(ev.main, ev.FLAGS, args)

  def error_line():
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err

  assert evaluate(f"--workdir={tmp_path}") == errors.EXIT_ERROR
  assert error_line().startswith("error: No checkpoint")
  assert evaluate(f"--workdir={workdir}", f"--fid_weights={tmp_path}/none.pth") == (
    errors.EXIT_ERROR
  )
  assert error_line().startswith("error: FID weights not found")
  assert evaluate(f"--workdir={tmp_path}/nowhere") == errors.EXIT_ERROR
  assert "does not exist" in error_line()
  assert evaluate(f"--workdir={workdir}", "--transfer=label") == errors.EXIT_USAGE
  assert error_line() == (
    "error: flag --transfer=label: value should be one of <mean_code|reference> (see --help)"
  )
  assert evaluate(f"--workdir={workdir}", "--num_pairs=0") == errors.EXIT_USAGE
  assert error_line().startswith("error: flag --num_pairs=0: ")
  assert evaluate("--no_images") == errors.EXIT_USAGE
  assert error_line() == "error: --workdir is required (see --help)"
  for cls, builtin in (
    (context.EvaluationError, ValueError),
    (networks.EvalClassifierError, RuntimeError),
  ):
    assert issubclass(cls, errors.UserError) and issubclass(cls, builtin), cls
