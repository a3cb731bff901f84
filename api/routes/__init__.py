"""The API's routers: operations (health, readiness, metrics) and ``/v1``."""
