"""The web page: search by photo, an image and its neighbours, duplicate groups, status; and its JSON API.

:func:`serve` runs it (``imgwatch web``); :class:`WebServer` splits it into ``open`` (checks
and binds, in the caller's thread) and ``serve`` (any thread, until a stop event) for
``imgwatch run``; :func:`create_app` builds the ASGI application alone (other ASGI servers).
"""

from imgwatch.web.app import create_app
from imgwatch.web.server import WebServer, serve

__all__ = ["WebServer", "create_app", "serve"]
