"""The HTTP API (FastAPI): recommendations, similar products, event intake, live updates, the widget."""
