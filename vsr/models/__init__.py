"""Network definitions only."""
from vsr.models.discriminator import Discriminator
from vsr.models.flowfuse import FlowFusedSRResNet
from vsr.models.recurrent import RecurrentSRResNet
from vsr.models.srresnet import SRResNet, count_parameters
from vsr.models.vgg import VGG54

ARCHITECTURES = {"srresnet": SRResNet, "recurrent-srresnet": RecurrentSRResNet, "window-srresnet": RecurrentSRResNet,
                 "flow-srresnet": FlowFusedSRResNet, "fusion-srresnet": FlowFusedSRResNet}

__all__ = ["ARCHITECTURES", "Discriminator", "FlowFusedSRResNet", "RecurrentSRResNet", "SRResNet", "VGG54", "count_parameters"]
