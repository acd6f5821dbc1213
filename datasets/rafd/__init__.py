"""RaFD (Radboud Faces Database) read from the vendor's folder; see the builder module."""
