"""config.dtype='bfloat16': bf16 compute, float32 params / optimizer states / statistics / losses."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from attrdis import train_state as ts
from attrdis import train_step as step_lib
from tiny import tiny_config

NUM_CLASSES = (5, 3)
BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)


def sub_jaxprs(value):
  if isinstance(value, jax.extend.core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax.extend.core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from sub_jaxprs(v)


def all_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in sub_jaxprs(value):
        yield from all_eqns(sub)


def dtypes_of(eqn):
  return [jnp.dtype(v.aval.dtype) for v in eqn.invars if hasattr(v.aval, "dtype")]


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32),
    "label": np.stack([rng.integers(0, n, 8) for n in NUM_CLASSES], 1).astype(np.int32),
  }
  built = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config()
    config.dtype = dtype
    models = ts.create_models(config, NUM_CLASSES, num_train_steps=10)
    built[dtype] = (config, models)
  # One set of float32 params for both (initialisation does not depend on the compute dtype).
  state = ts.create_train_state(built["float32"][1], 0)
  return built, state, batch


def test_params_and_optimizer_state_stay_float32(setup):
  built, _, _ = setup
  config, models = built["bfloat16"]
  state = ts.create_train_state(models, 0)
  assert {jnp.dtype(l.dtype) for l in jax.tree.leaves(state.params)} == {F32}
  floats = [l for l in jax.tree.leaves(state.opt_state) if jnp.issubdtype(l.dtype, jnp.floating)]
  assert floats and {jnp.dtype(l.dtype) for l in floats} == {F32}


def test_bf16_forward_dtypes(setup):
  """Matmuls/convs in bf16, instance-norm statistics and every reduction in f32, f32 outputs."""
  built, state, batch = setup
  _, models = built["bfloat16"]
  p = state.params
  x = jnp.asarray(batch["image"])
  calls = {
    "encode": lambda: models.gen.apply({"params": p["gen"]}, x, method="encode"),
    "generator": lambda: models.gen.apply({"params": p["gen"]}, x),
    "critic": lambda: models.critic.apply({"params": p["critic"]}, x),
    "classifiers": lambda: models.cls.apply({"params": p["cls"]}, x),
  }
  for name, f in calls.items():
    jaxpr = jax.make_jaxpr(f)().jaxpr
    eqns = list(all_eqns(jaxpr))
    matmuls = [e for e in eqns if e.primitive.name in ("dot_general", "conv_general_dilated")]
    assert matmuls, name
    for e in matmuls:
      assert set(dtypes_of(e)) == {BF16}, (name, e.primitive.name, dtypes_of(e))
    reductions = [
      e
      for e in eqns
      if e.primitive.name.startswith("reduce_") or e.primitive.name in ("argmax", "argmin")
    ]
    for e in reductions:
      assert set(dtypes_of(e)) <= {F32}, (name, e.primitive.name, dtypes_of(e))
    for out in jax.tree.leaves(f()):
      assert jnp.dtype(out.dtype) == F32, name
  # The generator's instance norms do reduce (their statistics), in float32.
  gen_eqns = list(all_eqns(jax.make_jaxpr(calls["generator"])().jaxpr))
  assert any(e.primitive.name == "reduce_sum" for e in gen_eqns)


def test_bf16_gradient_penalty_norm_and_losses_in_float32(setup):
  built, state, batch = setup
  config, models = built["bfloat16"]
  x = jnp.asarray(batch["image"])
  labels = [jnp.asarray(batch["label"][:, m]) for m in range(2)]
  perms, alpha = step_lib.draw_randomness(jax.random.key(0), 8, 2)
  # The dtypes follow from the traced computation: jax.eval_shape traces it (the gradient
  # penalty's double backward included) without running it.
  total, metrics = jax.eval_shape(
    lambda p: step_lib.compute_losses(models, p, x, labels, perms, alpha, config.loss_weights),
    state.params,
  )
  assert jnp.dtype(total.dtype) == F32
  assert "gp" in metrics and all(jnp.dtype(v.dtype) == F32 for v in metrics.values())
  grads = jax.eval_shape(
    lambda p: jax.grad(step_lib.compute_losses, argnums=1, has_aux=True)(
      models, p, x, labels, perms, alpha, config.loss_weights
    )[0],
    state.params,
  )
  assert {jnp.dtype(l.dtype) for l in jax.tree.leaves(grads)} == {F32}
  assert jax.tree.structure(grads) == jax.tree.structure(state.params)


def test_bf16_step_stays_close_to_float32_step(setup):
  """Same params, same batch, same randomness: losses within a few %, gradients aligned."""
  built, state, batch = setup
  x = jnp.asarray(batch["image"])
  labels = [jnp.asarray(batch["label"][:, m]) for m in range(2)]
  # The randomness the jitted train step draws at this step (its metrics are compared below).
  seed = built["float32"][0].seed
  perms, alpha = step_lib.draw_randomness(step_lib.step_key(seed, state.step), 8, 2)
  results = {}
  for dtype, (config, models) in built.items():
    grad_fn = jax.jit(
      lambda p, models=models, config=config: jax.grad(
        step_lib.compute_losses, argnums=1, has_aux=True
      )(models, p, x, labels, perms, alpha, config.loss_weights)
    )
    results[dtype] = grad_fn(state.params)
  (g32, m32), (g16, m16) = results["float32"], results["bfloat16"]
  for k in ("loss_g", "loss_d", "loss_c", "rec", "cls_x", "dis", "cls_trn", "wasserstein"):
    assert float(m16[k]) == pytest.approx(float(m32[k]), rel=0.05, abs=0.02), k
  assert float(m16["gp"]) == pytest.approx(float(m32["gp"]), rel=0.1, abs=0.02)
  for group in ts.GROUPS:
    a = np.concatenate([np.ravel(l) for l in jax.tree.leaves(g32[group])])
    b = np.concatenate([np.ravel(l) for l in jax.tree.leaves(g16[group])])
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine > 0.98, (group, cosine)
    assert np.linalg.norm(b) == pytest.approx(np.linalg.norm(a), rel=0.1), group

  # And the jitted bfloat16 train step: float32 state out, metrics close to the float32
  # losses above (the same params, batch and randomness).
  mesh = step_lib.make_mesh(jax.devices()[:1])
  replicated, _ = step_lib.shardings(mesh)
  config, models = built["bfloat16"]
  fn = step_lib.jit_train_step(models, config, mesh)
  new_state, metrics = fn(jax.device_put(jax.tree.map(jnp.array, state), replicated), batch)
  assert {jnp.dtype(l.dtype) for l in jax.tree.leaves(new_state.params)} == {F32}
  for k in ("loss_g", "loss_d", "loss_c", "rec"):
    assert float(metrics[k]) == pytest.approx(float(m32[k]), rel=0.05, abs=0.02), k
