"""The HTTP service: FastAPI app factory, settings, image decoding, micro-batching engine, routes, web page.

Imports ``model`` only, never ``training`` (docs/design.md, Layout).
"""

from app.main import create_app
from app.settings import Settings, get_settings

__all__ = ["Settings", "create_app", "get_settings"]
