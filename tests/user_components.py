"""A user's own component, outside multidiff, for the checkpoint-trust tests."""

import torch  # noqa: F401  (imported, so that the name user_components.torch.save exists)

from multidiff.domains.audio.nets.unet import UNet1d


class MyUNet(UNet1d):
    """The same network under a name multidiff does not know."""
