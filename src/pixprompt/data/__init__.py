"""Data layer: image files and dataset adapters (class names, labels, default templates)."""
from pixprompt.data.images import check_inputs, iter_images, open_rgb

__all__ = ["check_inputs", "iter_images", "open_rgb"]
