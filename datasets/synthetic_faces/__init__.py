"""The ``synthetic_faces`` TFDS builder (procedural cartoon faces with known factors)."""
