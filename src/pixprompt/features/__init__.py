"""Features layer: batched image encoding and the on-disk feature cache."""
from pixprompt._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"EncodedBatch": "pixprompt.features.encoding",
                                               "iter_encoded": "pixprompt.features.encoding"})

__all__ = ["EncodedBatch", "iter_encoded"]
