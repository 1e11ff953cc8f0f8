"""A user's own component, outside multidiff, for the checkpoint-trust tests."""

from multidiff.domains.audio.nets.unet import UNet1d


class MyUNet(UNet1d):
    """The same network under a name multidiff does not know."""
