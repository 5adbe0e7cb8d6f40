"""The local web page of `pixprompt serve`."""
from pixprompt.web.app import create_app

__all__ = ["create_app"]
