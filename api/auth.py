"""Who is calling: the API key in ``Authorization: Bearer``, and what its role allows.

Roles: ``admin`` (everything), ``operator`` (sweeps and inventory), ``viewer`` (read
all), ``account_manager`` (reads only its own customers, their domains and results).
A resource an account manager may not see is *not found* (404), never forbidden, so
that ids do not leak.
"""

from __future__ import annotations

from dataclasses import dataclass

ADMIN = "admin"
OPERATOR = "operator"
VIEWER = "viewer"
ACCOUNT_MANAGER = "account_manager"

#: Who may read everything / write the inventory and start sweeps.
READERS = frozenset({ADMIN, OPERATOR, VIEWER})
WRITERS = frozenset({ADMIN, OPERATOR})


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: the key's id, public prefix, role and account manager (if bound)."""

    key_id: int
    prefix: str
    role: str
    account_manager_id: int | None

    @property
    def scope(self) -> int | None:
        """The account manager whose customers this caller may see; None: all."""
        return self.account_manager_id if self.role == ACCOUNT_MANAGER else None
