"""All SQL of the fleet lives here: one module per aggregate.

Every function takes an :class:`~sqlalchemy.ext.asyncio.AsyncSession` first and only
*flushes*: the boundary (an API request, a worker job, a CLI command) commits once.
Bulk writes use ``INSERT … ON CONFLICT`` so that retried jobs are idempotent.

- :mod:`fleet.repositories.inventory`: account managers, customers, domains; scopes.
- :mod:`fleet.repositories.endpoints`: endpoints by ``(ip, port, service)``.
- :mod:`fleet.repositories.sweeps`: sweeps, their discovery, progress, the reconciler's
  query, closing.
- :mod:`fleet.repositories.results`: scan results (insert once), certificates, latest
  result per endpoint.
- :mod:`fleet.repositories.diff`: what changed between two sweeps.
"""
