"""API keys. A key is shown once at creation; the store keeps its SHA-256 only.

Keys are 256-bit random tokens, so an unsalted hash is enough to make a stolen table useless
(the scheme GitHub and Stripe tokens use); lookup is by hash, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select, update

from ragline.errors import NotFoundError
from ragline.store.repository import utcnow
from ragline.store.schema import api_keys

KEY_PREFIX = "rl_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    collections: list[str] | None  # None: every collection
    rate_limit: str | None
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    @property
    def scope(self) -> str:
        """The collections as `ragline keys list` shows them: `*` for all, `none` for a key
        scoped to no collection (it may use none), else the names."""
        if self.collections is None:
            return "*"
        return ",".join(self.collections) or "none"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Create, verify, list and revoke API keys."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self, name: str, collections: list[str] | None = None, rate_limit: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new key record and the secret key itself (returned only here)."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=key_id,
                    name=name,
                    key_hash=hash_key(secret),
                    prefix=secret[:10],
                    collections=collections,
                    rate_limit=rate_limit,
                    created_at=utcnow(),
                )
            )
        return self.get(key_id), secret

    def verify(self, secret: str) -> ApiKey | None:
        """The live key matching `secret`, or None (unknown or revoked)."""
        digest = hash_key(secret)
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_hash == digest)).first()
        if (
            row is None
            or not hmac.compare_digest(row.key_hash, digest)
            or row.revoked_at is not None
        ):
            return None
        return _key(row._mapping)

    def get(self, key_id: str) -> ApiKey:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise NotFoundError(f"API key {key_id} does not exist")
        return _key(row._mapping)

    def list(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            return [
                _key(r._mapping)
                for r in conn.execute(select(api_keys).order_by(api_keys.c.created_at))
            ]

    def revoke(self, key_id: str) -> ApiKey:
        with self.engine.begin() as conn:
            conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=utcnow())
            )
        return self.get(key_id)


def _key(row: object) -> ApiKey:
    mapping = dict(row)  # type: ignore[call-overload]
    return ApiKey(
        id=mapping["id"],
        name=mapping["name"],
        prefix=mapping["prefix"],
        collections=mapping["collections"],
        rate_limit=mapping["rate_limit"],
        created_at=mapping["created_at"],
        revoked_at=mapping["revoked_at"],
    )
