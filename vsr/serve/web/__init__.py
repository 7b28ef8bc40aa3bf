"""The web page ``vsr serve`` shows at ``/``: static HTML, CSS and JavaScript shipped as package data (no
build step, nothing fetched from elsewhere), read once at start-up."""
from __future__ import annotations

from importlib import resources

# URL path -> (file in this package, media type); the page and its two assets, nothing else.
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          "/web/app.css": ("app.css", "text/css; charset=utf-8"),
          "/web/app.js": ("app.js", "text/javascript; charset=utf-8")}


def load_assets() -> dict[str, tuple[bytes, str]]:
    """URL path -> (bytes, media type) of every asset; a missing file is an install error, raised here."""
    files = resources.files(__name__)
    return {path: (files.joinpath(name).read_bytes(), media) for path, (name, media) in ASSETS.items()}
