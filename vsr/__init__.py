"""vsr: 4x video super-resolution with SRResNet/SRGAN generators."""

__version__ = "0.1.0"
