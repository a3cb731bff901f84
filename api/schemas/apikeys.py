"""API keys as the API shows them (never the digest; the secret only once)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import DbId

Role = Literal["admin", "operator", "viewer", "account_manager"]


class ApiKeyCreate(BaseModel):
    """A key to create. ``account_manager_id`` is required for, and only for, the
    ``account_manager`` role."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"role": "operator", "name": "noc automation"},
                {"role": "account_manager", "name": "alice", "account_manager_id": 3},
            ]
        },
    )

    role: Role
    name: str = Field(default="", max_length=200)
    account_manager_id: DbId | None = None


class ApiKeyRead(BaseModel):
    """A key's public facts."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "prefix": "3f9a0c12",
                    "name": "noc automation",
                    "role": "operator",
                    "account_manager_id": None,
                    "created_at": "2026-11-28T01:00:00Z",
                    "revoked_at": None,
                }
            ]
        },
    )

    id: int
    prefix: str = Field(description="the public part of the key (tlsf_<prefix>_…)")
    name: str
    role: Role
    account_manager_id: int | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class ApiKeyCreated(ApiKeyRead):
    """A new key, with its secret: shown this once, stored only as a hash."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "prefix": "3f9a0c12",
                    "name": "noc automation",
                    "role": "operator",
                    "account_manager_id": None,
                    "created_at": "2026-11-28T01:00:00Z",
                    "revoked_at": None,
                    "key": "tlsf_3f9a0c12_Jk0…",
                }
            ]
        }
    )

    key: str = Field(description="the secret; send it as 'Authorization: Bearer <key>'")
