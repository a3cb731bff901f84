"""Request and response bodies of the API (kept apart from ORM models and scanner types)."""
