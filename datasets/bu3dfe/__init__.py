"""BU-3DFE (2D frontal textures) read from the vendor's folder; see the builder module."""
