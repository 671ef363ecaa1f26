"""OpenAI-compatible HTTP embedding server over the runtime: ``python -m runtime serve`` (needs the ``serve`` extra).

Importing this package is light; the HTTP stack (uvicorn, starlette, prometheus-client) is imported only by
``runtime.server.app`` and ``runtime.server.main``.
"""
