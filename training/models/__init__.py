"""Model code in the segmentation_models_pytorch style: encoders from a
registry, composed with a decoder and a segmentation head."""
from .encoders import ENCODERS, get_encoder
from .unet import Unet

__all__ = ["ENCODERS", "get_encoder", "Unet"]
