"""Where training writes its metrics: the log, TensorBoard event files and ``metrics.jsonl``.

The writers have the methods of clu's ``MetricWriter`` that training uses (``write_scalars``,
``write_images``, ``write_hparams``, ``flush``, ``close``) but import neither clu's
``metric_writers`` nor TensorFlow: clu's TensorBoard writer imports TensorFlow, seconds of
every training start (of every resume after a preemption, too). The event files are written
with TensorBoard's own protocol buffers and record framing, and TensorBoard reads them as it
reads TensorFlow's: scalars, images and the hyperparameters (HPARAMS tab).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import socket
import time
from typing import Any, Mapping

from absl import logging
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer import record_writer

_file_numbers = itertools.count()


def _uint8_image(image) -> np.ndarray:
  """(H, W), (H, W, 1|3|4) uint8, or floats in [0, 1] → uint8 (H, W, C)."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"an image is (H, W) or (H, W, 1|3|4), not {image.shape}")
  if image.dtype != np.uint8:
    image = np.clip(np.round(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)
  return image


def _png(image: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out, format="PNG")
  return out.getvalue()


def _hparam_value(v):
  return v if isinstance(v, (bool, int, float, str)) else str(v)


class TensorBoardWriter:
  """One TensorBoard event file in ``logdir`` (named like TensorFlow's:
  ``events.out.tfevents.<time>.<host>.<pid>.<n>.v2``)."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = (
      f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
      f"{os.getpid()}.{next(_file_numbers)}.v2"
    )
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, "wb")
    self._records = record_writer.RecordWriter(self._file)
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event: event_pb2.Event) -> None:
    self._records.write(event.SerializeToString())

  def _summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
    summary = summary_pb2.Summary(value=values)
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._summary(
      step,
      [
        summary_pb2.Summary.Value(tag=k, simple_value=float(np.asarray(v)))
        for k, v in scalars.items()
      ],
    )

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """``images``: name → a batch (N, H, W[, C]) of uint8 images or floats in [0, 1]; a
    batch of one is shown under ``name``, a larger one under ``name/0``, ``name/1``, ..."""
    values = []
    for name, batch in images.items():
      batch = np.asarray(batch)
      if batch.ndim not in (3, 4):
        raise ValueError(f"images {name!r}: a batch (N, H, W[, C]), not {batch.shape}")
      for i, image in enumerate(batch):
        image = _uint8_image(image)
        h, w, c = image.shape
        values.append(
          summary_pb2.Summary.Value(
            tag=name if len(batch) == 1 else f"{name}/{i}",
            image=summary_pb2.Summary.Image(
              height=h, width=w, colorspace=c, encoded_image_string=_png(image)
            ),
          )
        )
    self._summary(step, values)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Flat ``hparams`` (bool, int, float or str; anything else is written as its str)."""
    summary = hparams_summary.hparams_pb({k: _hparam_value(v) for k, v in hparams.items()})
    self._write(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class JsonlWriter:
  """One JSON object per ``write_scalars`` call: {"step": N, "<name>": value, ...}."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    row = {"step": int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()  # a row per logging interval: readable while the run goes on

  def write_images(self, step, images) -> None:
    pass

  def write_hparams(self, hparams) -> None:
    pass

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def read_jsonl(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class LoggingWriter:
  """Scalars and hyperparameters to the log (absl INFO), as ``[step] name = value, ...``."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    text = ", ".join(f"{k} = {float(np.asarray(v)):.6g}" for k, v in sorted(scalars.items()))
    logging.info("[%d] %s", step, text)

  def write_images(self, step, images) -> None:
    shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in images.items())
    logging.info("[%d] images: %s", step, shapes)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    logging.info("Hyperparameters: %s", dict(hparams))

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class MultiWriter:
  """Every call goes to each of ``writers`` in turn."""

  def __init__(self, writers):
    self.writers = list(writers)

  def write_scalars(self, step, scalars) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_images(self, step, images) -> None:
    for w in self.writers:
      w.write_images(step, images)

  def write_hparams(self, hparams) -> None:
    for w in self.writers:
      w.write_hparams(hparams)

  def flush(self) -> None:
    for w in self.writers:
      w.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()


def create_writer(workdir: str, process_index: int = 0) -> MultiWriter:
  """The log on every process; on process 0 also TensorBoard events in ``workdir`` and
  ``workdir/metrics.jsonl``."""
  if process_index != 0:
    return MultiWriter([LoggingWriter()])
  return MultiWriter(
    [
      LoggingWriter(),
      TensorBoardWriter(workdir),
      JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
    ]
  )
