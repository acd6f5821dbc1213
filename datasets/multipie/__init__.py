"""MultiPIE (CMU Multi-PIE, frontal camera) from the vendor's folder; see the builder module."""
