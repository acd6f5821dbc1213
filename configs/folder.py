"""Your own labelled images (the ``labelled_images`` dataset): a folder with a labels.csv
(``file,<attribute>,...``) or one sub-folder per class. The paper's model and training settings
(128 px, batch 16, 75 epochs); the folder is prepared on first use:

    python run_train.py --config=configs/folder.py --workdir=W \\
        --config.dataset.manual_dir=DIR --config.dataset.attributes=expression,identity

The dataset's options are the fields of ``config.dataset.folder`` (docs/folder_dataset.md):
``--config.dataset.folder.crop=none``, ``--config.dataset.folder.flip=True
--config.dataset.folder.flip_swap=gaze:left=right``, ... The images are stored at
``config.image_size`` (``dataset.folder.image_size`` follows it: setting either sets both).
"""

import ml_collections

from attrdis import tuple_flags
from attrdis.configuration import base_config


def get_config():
  # --config.dataset.attributes=expression,identity (bare words) is read as a tuple of names.
  tuple_flags.install()
  config = base_config()
  config.dataset.name = "labelled_images"
  config.dataset.attributes = ("identity", "expression")
  config.dataset.builder_config = ""  # "" = named after the options below
  f = config.dataset.folder = ml_collections.ConfigDict()
  f.labels_file = "labels.csv"  # in the folder; without it: one sub-folder per class
  f.class_attribute = "label"  # the attribute the class sub-folders define
  f.crop = "center"  # center (largest centred square), none, or left,top,right,bottom in px
  f.image_size = config.get_ref("image_size")  # the stored size: the model's
  f.split_by = "auto"  # auto, split (the CSV's split column), random, or a column to hold out
  f.test_size = 0.2  # a fraction (< 1) or a number (>= 1) of those values, or of the images
  f.split_seed = 0
  f.flip = False  # also train on every training image mirrored left-right
  f.flip_swap = ()  # classes exchanged in the mirrored images: ("gaze:left=right", ...)
  f.skip_bad_images = False  # skip missing/unreadable images (listed in the dataset info)
  return config
