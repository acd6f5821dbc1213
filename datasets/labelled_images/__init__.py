"""Your own labelled images (a folder plus a CSV, or one sub-folder per class); see the
builder module and docs/folder_dataset.md."""
