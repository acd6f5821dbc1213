"""Procedural synthetic faces with known factors (the embedded default dataset).

See :mod:`attrdis.synthetic.render` for the renderer and :mod:`attrdis.synthetic.design`
for what the ``synthetic_faces`` TFDS builder holds.
"""

from attrdis.synthetic.factors import (
  ATTRIBUTES,
  CLASS_NAMES,
  COLORS,
  EXPRESSIONS,
  GAZES,
  IDENTITY_PARAM_NAMES,
  ILLUMINATIONS,
  NUM_IDENTITY_PARAMS,
  FactorBatch,
  Factors,
  factors_from_record,
  identity_params,
  stack,
  transfer_factors,
)

# ``render`` is the module (attrdis.synthetic.render.render renders one face).
from attrdis.synthetic import design, render
from attrdis.synthetic.render import (
  landmarks,
  render_batch,
  render_layers,
  transfer_ground_truth,
  transfer_ground_truth_batch,
)

__all__ = [
  "ATTRIBUTES",
  "CLASS_NAMES",
  "COLORS",
  "EXPRESSIONS",
  "GAZES",
  "IDENTITY_PARAM_NAMES",
  "ILLUMINATIONS",
  "NUM_IDENTITY_PARAMS",
  "FactorBatch",
  "Factors",
  "factors_from_record",
  "identity_params",
  "stack",
  "transfer_factors",
  "design",
  "render",
  "landmarks",
  "render_batch",
  "render_layers",
  "transfer_ground_truth",
  "transfer_ground_truth_batch",
]
