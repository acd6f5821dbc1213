"""Ablation I (the paper's §IV-B1, Eq. 10, Table III, Fig. 4) on synthetic faces:

    python -m attrdis.ablation --config=configs/ablation.py --workdir=/tmp/ablation

Shallow fully connected encoders for expression and illumination (the paper's MultiPIE
pair) trained with L_cls^x + λ_dis L_dis, once per λ_dis in ``dis_weights``; reports the
Hopkins statistic of the expression codes within each expression cluster and draws their
t-SNE embeddings coloured by expression and by illumination. Any field can be overridden,
e.g. ``--config.num_train_steps=500``.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "synthetic_faces"
  c.dataset.builder_config = "32px"
  c.dataset.data_dir = ""  # "" = TFDS' default
  c.dataset.manual_dir = ""
  c.dataset.attributes = ("expression", "illumination")  # the paper's MultiPIE pair
  c.image_size = 32

  c.model = ml_collections.ConfigDict()
  c.model.hidden = 256  # encoder: flatten → dense(hidden) → ReLU → dense(code_dim)
  c.model.code_dim = 8  # z_m ∈ R^code_dim; C_m's head is one dense layer on it
  # How the classifiers C_m learn (encoders always learn by Eq. 10):
  # 'images' — as in the full model: C_m = head_m(shallow FC features of the image), trained
  #            by L_cls^c on real images; the encoders meet the same heads through the
  #            latent entry (Eq. 3, 4) and the heads are not moved by Eq. 10.
  # 'joint'  — everything (encoders and heads) minimises Eq. 10 alone.
  c.classifier_training = "images"

  c.dis_weights = (1.0, 0.0)  # one run per λ_dis
  c.batch_size = 64
  c.num_train_steps = 3000
  c.learning_rate = 1e-3
  c.seed = 0

  c.eval_split = "test"  # held-out identities
  c.hopkins_draws = 20
  c.hopkins_fraction = 0.1
  c.embedding = "tsne"  # or 'pca'
  c.tsne_perplexity = 30.0
  c.tsne_steps = 750
  return c
