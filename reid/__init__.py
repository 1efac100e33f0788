"""Attention-driven person re-identification (Yang et al., Pattern Recognition 2019)."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["FeatureExtractor", "__version__"]


def __getattr__(name: str) -> Any:
    # `from reid import FeatureExtractor` without importing torch and Lightning for every `import reid`
    if name == "FeatureExtractor":
        from reid.inference.extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'reid' has no attribute {name!r}")
