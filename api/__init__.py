"""The HTTP API: ``create_app(settings)`` in :mod:`api.app`, routes under ``/v1``."""
