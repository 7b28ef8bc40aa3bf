"""Network definitions only."""
from vsr.models.discriminator import Discriminator
from vsr.models.srresnet import SRResNet, count_parameters
from vsr.models.vgg import VGG54

ARCHITECTURES = {"srresnet": SRResNet}

__all__ = ["ARCHITECTURES", "Discriminator", "SRResNet", "VGG54", "count_parameters"]
