"""``python -m vsr`` (and ``torchrun -m vsr``) entry point."""
from vsr.cli import main

main()
