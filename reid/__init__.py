"""Attention-driven person re-identification (Yang et al., Pattern Recognition 2019)."""

__version__ = "0.1.0"
