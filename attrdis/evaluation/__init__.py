"""The evaluator (docs/design.md §4, the paper's §IV), one module per family of metrics.

Each metric is a function of a :class:`context.Context` (the trained model, its test split
and the options) that returns {metric name: number} and may write a PNG:

* ``context`` — the options, the split cache, the encoded test split, pairs, the context;
* ``reconstruction`` — ``recon/*``;
* ``leakage`` — ``entropy/*``, ``latent_acc/*`` (Fig. 5), ``knn_acc/*``, ``linear_probe/*``;
* ``clustering`` — ``hopkins/*`` (Table III), the PCA / t-SNE embeddings (Fig. 4);
* ``synthesis`` — ``synthesis/*`` (Table IV: translation accuracy, FID, KID);
* ``ground_truth`` — synthetic faces' ``gt/*``, ``transfer/*``, ``intensity/*``, and on every
  dataset ``source_of/*``, ``recon/read*``;
* ``networks`` — the evaluation networks that read translated images (``eval_classifier/*``);
  ``train_networks`` the command that trains them ahead of time;
* ``plots`` — every picture;
* ``suite`` — the metrics by name, :func:`suite.evaluate` (``python -m attrdis.evaluate``)
  and :func:`suite.periodic_eval` (training's ``config.eval_every_steps``).

Nothing is imported here: ``from attrdis.evaluation import suite`` and so on.
"""
