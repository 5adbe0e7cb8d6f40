"""Features layer: batched image encoding and the on-disk feature cache."""
from pixprompt.features.encoding import EncodedBatch, iter_encoded

__all__ = ["EncodedBatch", "iter_encoded"]
