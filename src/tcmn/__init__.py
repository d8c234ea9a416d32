"""TCMN: one-shot medical video object segmentation with a Temporal Contrastive Memory Network."""

__version__ = "0.1.0"
