"""TFDS builders of attrdis, installed as the package ``attrdis_datasets``.

Each dataset lives in ``datasets/<name>/<name>_dataset_builder.py`` as a class
``Builder(tfds.core.GeneratorBasedBuilder)`` so that ``tfds build datasets/<name>``
works, and ``attrdis.input_pipeline`` finds it by name.

The contract every builder keeps (the input pipeline, sampling and evaluation rely on it):

* the feature ``image``: uint8 RGB (S, S, 3), stored raw (``features.image``: a
  ``tfds.features.Tensor`` with ``Encoding.BYTES``, so that reading is a copy; datasets
  prepared by older versions store PNGs, as ``tfds.features.Image``, and read the same);
* one ``tfds.features.ClassLabel`` per categorical attribute, under the attribute's
  name (``identity``, ``expression``, ``illumination``, ``gaze``, ``color``, ``pose``);
  any of them can be chosen as a modelled attribute by ``config.dataset.attributes``;
* anything else (file names, intensities, render parameters) as extra features;
* splits ``train`` and ``test``, identities disjoint between them;
* builder configs carry the image size as ``config.image_size``;
* written as ``array_record`` (the builder is constructed with
  ``file_format="array_record"``) and read back through ``as_data_source``.
"""

DATASETS = ("synthetic_faces", "multipie", "bu3dfe", "rafd", "labelled_images")
