"""The local web page of `pixprompt serve`."""
from pixprompt._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"create_app": "pixprompt.web.app"})

__all__ = ["create_app"]
