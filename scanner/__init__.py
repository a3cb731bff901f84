"""tlsfleet's scanner: a pure library that turns targets into typed scan results.

It imports nothing from the rest of the project and no database, web or queue library.
"""
