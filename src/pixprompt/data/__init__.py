"""Data layer: image files and dataset adapters (class names, labels, default templates)."""
from pixprompt.data.images import collect_images, open_rgb

__all__ = ["collect_images", "open_rgb"]
