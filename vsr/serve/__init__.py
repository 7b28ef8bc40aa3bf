"""The HTTP service: batch prediction on arrays, image upscaling, and persistent video jobs.

One process owns the model. ``guard`` admits or refuses a request before it is read; ``requests``
parses and validates bodies (pure functions); ``batcher`` gathers array and image requests into
device batches; ``jobs`` keeps the video jobs (a SQLite table and work folders) and runs them one at a
time through the engine ``vsr upscale`` uses; ``app`` ties them into the FastAPI routes.
"""
from vsr.config import ServeConfig
from vsr.serve.app import create_app

__all__ = ["ServeConfig", "create_app"]
