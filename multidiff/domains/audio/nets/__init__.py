"""Raw-waveform denoisers: a 1D U-Net and DiffWave."""

from .diffwave import DiffWave
from .unet import UNet1d

__all__ = ["DiffWave", "UNet1d"]
