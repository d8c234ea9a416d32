"""Data: the prepared layout, synthetic videos, converters, splits, clip sampling, the data module."""
