"""The HTTP API Lambda: webhooks (/webhooks/*) and the dashboard's REST API (/api/*), FastAPI behind Mangum,
plus the HTTP API's Lambda REQUEST authorizer (authorizer.py)."""

__version__ = "0.1.0"
