"""Using a trained model on new images: :class:`FeatureExtractor` (a checkpoint -> features) and gallery search."""

from reid.inference.extractor import FeatureExtractor

__all__ = ["FeatureExtractor"]
