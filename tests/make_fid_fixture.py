"""Makes the FID agreement fixtures with torch + pytorch-fid (run once; the tests need no torch).

    python3 -m venv /tmp/fidvenv
    /tmp/fidvenv/bin/pip install torch==2.14.1 torchvision==0.29.1   # from this machine's disk
    /tmp/fidvenv/bin/pip install pytorch-fid numpy pillow scipy
    /tmp/fidvenv/bin/python tests/make_fid_fixture.py [--out tests/fixtures]

Writes into --out:

* ``fid_reference.npz`` — pytorch-fid's own FID Inception (its ``InceptionV3`` class, with the
  weights it would download replaced by the deterministic stand-ins of
  ``tests/fid_fixture_weights.py``) run through pytorch-fid's own file pipeline
  (``calculate_activation_statistics`` on PNG folders, ``calculate_frechet_distance``,
  ``calculate_fid_given_paths``) on two small deterministic image sets; plus reference outputs
  of ``F.interpolate(bilinear, align_corners=False)`` for the resize, and the state-dict key
  list/shapes of pytorch-fid's model.
* ``pth_small.pth`` (zip format), ``pth_small_legacy.pth`` (legacy format) and
  ``pth_small_expected.npz`` — a tiny state dict written by ``torch.save``, for the torch-free
  loader.

The weights are not saved (the full set is ~95 MB); the tests regenerate them with numpy.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pytorch_fid import fid_score
from pytorch_fid import inception as pfid_inception

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import fid_fixture_weights as fixture_weights  # noqa: E402  (numpy only)

SETS = {"a": dict(seed=1, n=8, height=45, width=61), "b": dict(seed=2, n=8, height=52, width=40)}
BATCH_SIZE = 5  # not a divisor of 8: exercises a partial last batch in pytorch-fid
CLI_SUBSET = 5
RESIZE_CASES = [
  ((7, 5), (13, 3)),
  ((20, 17), (6, 9)),
  ((5, 400), (2, 299)),
  ((3, 61), (7, 299)),
  ((299, 4), (299, 11)),
  ((1, 1), (3, 2)),
]


def _fid_model_keys() -> dict[str, tuple[int, ...]]:
  """State-dict keys/shapes of pytorch-fid's FID Inception, built the way pytorch-fid builds it."""
  m = pfid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  m.Mixed_5b = pfid_inception.FIDInceptionA(192, pool_features=32)
  m.Mixed_5c = pfid_inception.FIDInceptionA(256, pool_features=64)
  m.Mixed_5d = pfid_inception.FIDInceptionA(288, pool_features=64)
  m.Mixed_6b = pfid_inception.FIDInceptionC(768, channels_7x7=128)
  m.Mixed_6c = pfid_inception.FIDInceptionC(768, channels_7x7=160)
  m.Mixed_6d = pfid_inception.FIDInceptionC(768, channels_7x7=160)
  m.Mixed_6e = pfid_inception.FIDInceptionC(768, channels_7x7=192)
  m.Mixed_7b = pfid_inception.FIDInceptionE_1(1280)
  m.Mixed_7c = pfid_inception.FIDInceptionE_2(2048)
  return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _install_stand_in_weights(state_dict: dict[str, np.ndarray]) -> None:
  """Makes pytorch-fid's weight 'download' return the stand-in state dict."""

  def fake_load(url, progress=True, **kwargs):
    assert url == pfid_inception.FID_WEIGHTS_URL, url
    return collections.OrderedDict(
      (k, torch.from_numpy(np.array(v))) for k, v in state_dict.items()
    )

  pfid_inception.load_state_dict_from_url = fake_load


def _block_stats(model, x) -> None:
  """Prints the spread of activations after each Inception block (sanity: no blow-up/vanishing)."""
  h = x
  h = F.interpolate(h, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
  for i, block in enumerate(model.blocks):
    for layer in block:
      h = layer(h)
      name = type(layer).__name__
      print(
        f"  block{i} {name:16s} shape={tuple(h.shape[1:])} mean={h.mean():.3f} "
        f"std={h.std():.3f} std-over-images={h.std(0).mean():.4f}"
      )


def _write_pngs(images: np.ndarray, folder: pathlib.Path) -> list[pathlib.Path]:
  folder.mkdir(parents=True)
  files = []
  for i, img in enumerate(images):
    p = folder / f"img_{i:02d}.png"
    Image.fromarray(img).save(p)
    files.append(p)
  return files


def make_reference(out: pathlib.Path) -> None:
  torch.manual_seed(0)
  keys = _fid_model_keys()
  state_dict = fixture_weights.fixture_state_dict(keys)
  _install_stand_in_weights(state_dict)
  model = pfid_inception.InceptionV3([3]).eval()  # pytorch-fid's class, strict load

  data: dict[str, np.ndarray] = {}
  with tempfile.TemporaryDirectory() as tmp:
    dirs = {}
    for name, cfg in SETS.items():
      images = fixture_weights.fixture_images(cfg["seed"], cfg["n"], cfg["height"], cfg["width"])
      data[f"images_{name}"] = images
      dirs[name] = pathlib.Path(tmp) / name
      files = _write_pngs(images, dirs[name])
      acts = fid_score.get_activations(
        files, model, batch_size=BATCH_SIZE, dims=2048, device="cpu", num_workers=0
      )
      mu, sigma = fid_score.calculate_activation_statistics(
        files, model, batch_size=BATCH_SIZE, dims=2048, device="cpu", num_workers=0
      )
      data[f"features_{name}"] = acts.astype(np.float32)
      assert np.array_equal(acts.astype(np.float32).astype(np.float64), acts)
      data[f"mu_{name}"] = mu
      data[f"sigma_diag_{name}"] = np.diag(sigma).copy()
      data[f"sigma_trace_{name}"] = np.float64(np.trace(sigma))
      data[f"sigma_sum_{name}"] = np.float64(sigma.sum())
      data[f"_sigma_{name}"] = sigma  # not saved (64 MB); used below
      print(
        f"set {name}: features mean={acts.mean():.4f} std={acts.std():.4f} "
        f"std-over-images={acts.std(0).mean():.4f} zeros={np.mean(acts == 0):.3f}"
      )
      with torch.no_grad():
        _block_stats(model, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
    fid = fid_score.calculate_frechet_distance(
      data["mu_a"], data.pop("_sigma_a"), data["mu_b"], data.pop("_sigma_b")
    )
    fid_paths = fid_score.calculate_fid_given_paths(
      [str(dirs["a"]), str(dirs["b"])], BATCH_SIZE, "cpu", 2048, num_workers=0
    )
    # The same on the first CLI_SUBSET images of each set (a cheaper end-to-end CLI test).
    sub = [pathlib.Path(tmp) / f"{name}_first" for name in SETS]
    for name, folder in zip(SETS, sub):
      _write_pngs(data[f"images_{name}"][:CLI_SUBSET], folder)
    data["fid_given_paths_subset"] = np.float64(
      fid_score.calculate_fid_given_paths(
        [str(p) for p in sub], BATCH_SIZE, "cpu", 2048, num_workers=0
      )
    )
    data["cli_subset"] = np.int64(CLI_SUBSET)
  data["fid"] = np.float64(fid)
  data["fid_given_paths"] = np.float64(fid_paths)
  print(
    f"pytorch-fid FID = {fid!r}; via calculate_fid_given_paths = {fid_paths!r}; "
    f"first {CLI_SUBSET} of each set: {data['fid_given_paths_subset']!r}"
  )

  # F.interpolate reference (float inputs, NCHW in torch; stored NHWC).
  rng = np.random.default_rng(7)
  for i, ((h, w), (oh, ow)) in enumerate(RESIZE_CASES):
    x = rng.uniform(0, 1, (2, 3, h, w)).astype(np.float32)
    y = F.interpolate(
      torch.from_numpy(x), size=(oh, ow), mode="bilinear", align_corners=False
    ).numpy()
    data[f"resize_in_{i}"] = x.transpose(0, 2, 3, 1)
    data[f"resize_out_{i}"] = y.transpose(0, 2, 3, 1)

  data["state_dict_spec"] = np.array(json.dumps({k: list(v) for k, v in keys.items()}))
  data["weights_seed"] = np.int64(fixture_weights.DEFAULT_SEED)
  data["weights_checksum"] = fixture_weights.checksum(state_dict)
  data["batch_size"] = np.int64(BATCH_SIZE)
  import pytorch_fid
  import torchvision

  data["versions"] = np.array(
    f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
    f"pytorch-fid {pytorch_fid.__version__}, numpy {np.__version__}"
  )
  np.savez_compressed(out / "fid_reference.npz", **data)


def make_small_pth(out: pathlib.Path) -> None:
  g = torch.Generator().manual_seed(3)
  big = torch.arange(20, dtype=torch.float32) * 0.5 - 3.0
  sd = collections.OrderedDict()
  sd["conv.weight"] = torch.randn(4, 3, 3, 3, generator=g)
  sd["bn.running_var"] = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
  sd["bn.num_batches_tracked"] = torch.tensor(123456789012, dtype=torch.int64)
  sd["transposed"] = torch.randn(5, 3, generator=g).t()  # non-contiguous, strides (1, 3)
  sd["offset_view"] = big[5:11].view(2, 3)  # storage offset 5, shares `big`'s storage
  sd["strided_view"] = big[10:20:2]  # offset 10, stride 2, same storage
  sd["long_matrix"] = torch.tensor([[1, -2, 3], [2**40, 0, -(2**50)]], dtype=torch.int64)
  sd["empty"] = torch.zeros(0, 3)
  sd["scalar"] = torch.tensor(2.5)
  assert not sd["transposed"].is_contiguous() and sd["offset_view"].storage_offset() == 5
  torch.save(sd, out / "pth_small.pth")
  torch.save(sd, out / "pth_small_legacy.pth", _use_new_zipfile_serialization=False)
  np.savez(out / "pth_small_expected.npz", **{k: v.numpy() for k, v in sd.items()})


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=str(REPO / "tests" / "fixtures"))
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
  make_small_pth(out)
  make_reference(out)
  for p in sorted(out.iterdir()):
    print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
  main()
