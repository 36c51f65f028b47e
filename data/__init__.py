"""Data layer, imported as ``rlhf.data`` (placeholder; filled in by the data module work)."""
