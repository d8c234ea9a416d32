"""The TCMN network: backbones, encoders, memory readout, decoder (plain PyTorch, no Lightning)."""

from tcmn.models.encoders import QueryFeatures
from tcmn.models.network import TCMN, ClipOutput, count_parameters, pad_divisible, unpad

__all__ = ["TCMN", "ClipOutput", "QueryFeatures", "count_parameters", "pad_divisible", "unpad"]
