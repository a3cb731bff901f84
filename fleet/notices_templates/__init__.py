"""The shipped notice templates (``<lang>/notice.<txt|html|md>.j2``), package data.

A deployment overrides any of them with a file of the same relative name under
``TLSFLEET_TEMPLATES_DIR`` (see docs/notices.md).
"""
