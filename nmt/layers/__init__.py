"""Keras 3 layers the models are composed of."""

from nmt.layers.attention import Attention
from nmt.layers.decoder import Decoder
from nmt.layers.encoder import Encoder
from nmt.layers.recurrent import Recurrent

__all__ = ["Attention", "Decoder", "Encoder", "Recurrent"]
