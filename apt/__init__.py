"""apt-bench: OOD instruction generalization benchmark for VLA policies, and the APT method."""

__version__ = "0.1.0"
