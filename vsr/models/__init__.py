"""Network definitions only."""
from vsr.models.srresnet import SRResNet, count_parameters

ARCHITECTURES = {"srresnet": SRResNet}

__all__ = ["ARCHITECTURES", "SRResNet", "count_parameters"]
