"""API keys: create (returning the secret once), find by secret, list, revoke.

Only the SHA-256 digest of a key is stored. A key reads ``tlsf_<prefix>_<secret>``:
the prefix (8 hex digits) is public and finds the row; the digest of the whole key is
compared with :func:`hmac.compare_digest`, so timing does not tell how much matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import API_ROLES, AccountManager, ApiKey

__all__ = [
    "API_ROLES",
    "NewKey",
    "authenticate",
    "create_key",
    "ensure_key",
    "generate_secret",
    "get_key",
    "list_keys",
    "manager_by_email",
    "revoke_key",
]

_SCHEME = "tlsf"


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created: the row and the secret, which is shown once and never stored."""

    key: ApiKey
    secret: str


#: A key as :func:`generate_secret` makes it: the scheme, 8 hex digits, at least 32
#: URL-safe characters of secret.
_KEY_FORMAT = re.compile(r"tlsf_([0-9a-f]{8})_[A-Za-z0-9_-]{32,200}")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_secret() -> str:
    """A new key's secret (stored nowhere): ``tlsf_<prefix>_<43 URL-safe characters>``."""
    return f"{_SCHEME}_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


async def create_key(
    session: AsyncSession,
    *,
    role: str,
    name: str = "",
    account_manager_id: int | None = None,
) -> NewKey:
    """A new key (flushed). ValueError for an unknown role, or an account manager given
    to any role but ``account_manager`` (which needs one)."""
    if role not in API_ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(API_ROLES)}")
    if (role == "account_manager") != (account_manager_id is not None):
        raise ValueError("an account_manager key needs an account manager, other roles none")
    secret = generate_secret()
    prefix = secret.split("_", 2)[1]
    key = ApiKey(
        prefix=prefix,
        digest=_digest(secret),
        name=name,
        role=role,
        account_manager_id=account_manager_id,
    )
    session.add(key)
    await session.flush()
    return NewKey(key, secret)


async def ensure_key(
    session: AsyncSession, secret: str, *, role: str = "admin", name: str = "bootstrap"
) -> tuple[ApiKey, bool]:
    """Store a key whose secret the deployment chose (``TLSFLEET_BOOTSTRAP_API_KEY``)
    unless it is stored already: the key and whether it was created now (flushed).

    Idempotent, and safe when several API processes start at once (the insert does
    nothing on a prefix that exists). Only the digest is stored. A key once revoked
    stays revoked. ValueError for a secret not in the format :func:`generate_secret`
    makes, or when a different key already has the secret's prefix.
    """
    match = _KEY_FORMAT.fullmatch(secret)
    if match is None:
        raise ValueError(
            "not a tlsfleet API key: expected tlsf_<8 hex digits>_<at least 32 URL-safe "
            "characters> (`tlsfleet apikey generate` makes one)"
        )
    if role == "account_manager" or role not in API_ROLES:
        raise ValueError(f"a bootstrap key's role is one of admin, operator, viewer, not {role!r}")
    prefix, digest = match.group(1), _digest(secret)
    inserted = await session.scalar(
        insert(ApiKey)
        .values(prefix=prefix, digest=digest, name=name, role=role)
        .on_conflict_do_nothing(index_elements=[ApiKey.prefix])
        .returning(ApiKey.id)
    )
    key = await session.scalar(
        select(ApiKey).where(ApiKey.prefix == prefix).execution_options(populate_existing=True)
    )
    assert key is not None  # inserted now, or there before
    if not hmac.compare_digest(key.digest, digest):
        raise ValueError(f"another API key already has the prefix {prefix}")
    return key, inserted is not None


async def authenticate(session: AsyncSession, secret: str) -> ApiKey | None:
    """The live (not revoked) key whose secret this is; None otherwise."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != _SCHEME or not parts[1]:
        return None
    key = await session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    # Compare even when no row was found, so that timing says nothing either way.
    expected = key.digest if key is not None else "0" * 64
    if not hmac.compare_digest(expected, _digest(secret)) or key is None:
        return None
    return None if key.revoked_at is not None else key


async def get_key(session: AsyncSession, key_id: int) -> ApiKey | None:
    """One key by id (revoked or not)."""
    return await session.get(ApiKey, key_id)


async def list_keys(
    session: AsyncSession, *, after: int | None = None, limit: int | None = None
) -> Sequence[ApiKey]:
    """Keys in id order, optionally after an id and at most ``limit`` of them."""
    stmt = select(ApiKey).order_by(ApiKey.id)
    if after is not None:
        stmt = stmt.where(ApiKey.id > after)
    if limit is not None:
        stmt = stmt.limit(limit)
    return (await session.scalars(stmt)).all()


async def revoke_key(session: AsyncSession, key_id: int) -> ApiKey | None:
    """Revoke a key (idempotent: an already revoked key keeps its time); None if unknown."""
    key = await session.get(ApiKey, key_id)
    if key is None:
        return None
    if key.revoked_at is None:
        key.revoked_at = await session.scalar(select(func.now()))
        await session.flush()
    return key


async def manager_by_email(session: AsyncSession, email: str) -> AccountManager | None:
    """The account manager with this (lower-case) e-mail address."""
    return await session.scalar(
        select(AccountManager).where(func.lower(AccountManager.email) == email.lower())
    )
