"""The prompt registry: immutable numbered versions, movable labels, rollback.

The service asks for a prompt's `production` label on every request through a short cache
(`PromptResolver`, a few seconds), so `ragline prompts rollback NAME` takes effect without a
restart; with no version in the registry, the built-in template of that name is used.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from urllib.parse import quote

import httpx
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from ragline.config import LangfuseSettings
from ragline.errors import BackendError, InvalidRequestError, NotFoundError
from ragline.generation.prompts import PromptTemplate, builtin_versions, get_prompt
from ragline.store.repository import utcnow
from ragline.store.schema import prompt_labels, prompts
from ragline.tracing.setup import langfuse_client

log = logging.getLogger(__name__)

PRODUCTION = "production"


class PromptRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def push(self, name: str, system: str, user: str, label: str | None = None) -> PromptTemplate:
        """Store a new version (the next number); optionally point a label at it."""
        for field in ("{context}", "{question}"):
            if field not in user:
                raise InvalidRequestError(f"the user template must contain {field}")
        with self.engine.begin() as conn:
            version = (
                int(
                    conn.scalar(
                        select(func.coalesce(func.max(prompts.c.version), 0)).where(
                            prompts.c.name == name
                        )
                    )
                    or 0
                )
                + 1
            )
            conn.execute(
                insert(prompts).values(
                    name=name, version=version, system=system, user=user, created_at=utcnow()
                )
            )
        if label:
            self.label(name, version, label)
        return PromptTemplate(name, version, system, user)

    def get(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> PromptTemplate:
        """A version, the version a label points at, or the newest."""
        if label is not None:
            version = self.labelled(name, label)
            if version is None:
                raise NotFoundError(f"prompt {name!r} has no label {label!r}")
        query = select(prompts).where(prompts.c.name == name)
        query = (
            query.where(prompts.c.version == version)
            if version
            else query.order_by(prompts.c.version.desc()).limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(
                f"prompt {name!r}"
                + (f" has no version {version}" if version else " does not exist")
            )
        return PromptTemplate(row.name, row.version, row.system, row.user)

    def labelled(self, name: str, label: str) -> int | None:
        query = (
            select(prompt_labels.c.version)
            .where(prompt_labels.c.name == name, prompt_labels.c.label == label)
            .order_by(prompt_labels.c.seq.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            version = conn.scalar(query)
        return int(version) if version is not None else None

    def label(self, name: str, version: int, label: str) -> None:
        self.get(name, version)  # must exist
        with self.engine.begin() as conn:
            conn.execute(
                insert(prompt_labels).values(
                    name=name, label=label, version=version, created_at=utcnow()
                )
            )

    def rollback(self, name: str, label: str = PRODUCTION) -> int:
        """Point the label back at the version it had before its last move; returns it."""
        query = (
            select(prompt_labels.c.version)
            .where(prompt_labels.c.name == name, prompt_labels.c.label == label)
            .order_by(prompt_labels.c.seq.desc())
        )
        with self.engine.connect() as conn:
            history = [int(v) for v in conn.scalars(query)]
        current = history[0] if history else None
        previous = next((v for v in history[1:] if v != current), None)
        if previous is None:
            raise InvalidRequestError(
                f"prompt {name!r} label {label!r} has no earlier version to roll back to"
            )
        self.label(name, previous, label)
        return previous

    def seed(self, name: str) -> PromptTemplate:
        """First use of a built-in prompt: store every built-in version under its own number
        and label the newest `production`, so the registry is the one source of truth from then
        on and a fresh store's version n is the built-in version n. Safe when processes race:
        the versions go in one transaction that a racing seed's duplicate key aborts.

        A store that already holds versions of the name but no production label gets its
        newest version labelled; a store seeded before a new built-in version shipped keeps
        its production version until `adopt_builtin` (`ragline prompts builtin`) moves it."""
        versions = builtin_versions(name)
        if not versions:
            raise NotFoundError(f"prompt {name!r} has no production version and is not built in")
        if self.labelled(name, PRODUCTION) is None:
            version = self._newest_version(name)
            if version is None:
                version = versions[-1]
                try:
                    with self.engine.begin() as conn:
                        conn.execute(
                            insert(prompts),
                            [_row(get_prompt(name, v)) for v in versions],
                        )
                except IntegrityError:  # another thread or process stored them first
                    pass
            self.label(name, version, PRODUCTION)  # labels are append-only: racing is harmless
        return self.get(name, label=PRODUCTION)

    def adopt_builtin(self, name: str, label: str = PRODUCTION) -> PromptTemplate:
        """Point `label` at the newest built-in version of `name`: the stored version with the
        same text, else a new version holding it. In a store seeded before that built-in
        shipped, its number is the next free one (built-in v2 may be stored as v4); a
        rollback undoes the move like any other."""
        builtin = get_prompt(name)
        query = select(prompts.c.version).where(
            prompts.c.name == name,
            prompts.c.system == builtin.system,
            prompts.c.user == builtin.user,
        )
        with self.engine.connect() as conn:
            version = conn.scalar(query.order_by(prompts.c.version).limit(1))
        if version is None:
            return self.push(name, builtin.system, builtin.user, label)
        self.label(name, int(version), label)
        return self.get(name, int(version))

    def _newest_version(self, name: str) -> int | None:
        with self.engine.connect() as conn:
            version = conn.scalar(select(func.max(prompts.c.version)).where(prompts.c.name == name))
        return int(version) if version is not None else None

    def versions(self) -> list[tuple[str, int, list[str]]]:
        """(name, version, labels currently on it), every stored version."""
        with self.engine.connect() as conn:
            rows = list(
                conn.execute(
                    select(prompts.c.name, prompts.c.version).order_by(
                        prompts.c.name, prompts.c.version
                    )
                )
            )
            labels = list(conn.execute(select(prompt_labels).order_by(prompt_labels.c.seq)))
        current: dict[tuple[str, str], int] = {}
        for row in labels:
            current[(row.name, row.label)] = row.version
        return [
            (
                name,
                version,
                sorted(lbl for (n, lbl), v in current.items() if n == name and v == version),
            )
            for name, version in rows
        ]


def _row(template: PromptTemplate) -> dict[str, object]:
    return {
        "name": template.name,
        "version": template.version,
        "system": template.system,
        "user": template.user,
        "created_at": utcnow(),
    }


class LangfusePrompts:
    """Langfuse prompt management: `GET /api/public/v2/prompts/{name}?label=production`.
    Chat prompts map their system and user messages; Langfuse's `{{var}}` placeholders become
    ragline's `{var}`."""

    def __init__(
        self, settings: LangfuseSettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._client = langfuse_client(settings, 2.0, transport)

    def get(self, name: str, label: str = PRODUCTION) -> PromptTemplate:
        try:
            response = self._client.get(
                f"/api/public/v2/prompts/{quote(name, safe='')}", params={"label": label}
            )
            response.raise_for_status()
            body = response.json()
            if body.get("type") == "chat":
                messages = {
                    m.get("role"): m.get("content", "")
                    for m in body["prompt"]
                    if isinstance(m, dict)
                }
                system, user = messages.get("system", ""), messages.get("user", "")
            else:
                system, user = "", str(body["prompt"])
            return PromptTemplate(name, int(body["version"]), _braces(system), _braces(user))
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"Langfuse prompt {name!r} unavailable: {exc}") from exc

    def close(self) -> None:
        self._client.close()


def _braces(template: str) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", r"{\1}", template)


class PromptResolver:
    """The template to use now: the registry's `production` version of a name, cached for a
    few seconds; the built-in template when the registry has none."""

    def __init__(
        self,
        registry: PromptRegistry,
        name: str,
        ttl_s: float = 2.0,
        remote: LangfusePrompts | None = None,
    ) -> None:
        self.registry = registry
        self.name = name
        self.ttl_s = ttl_s
        self.remote = remote
        self.remote_failures = 0
        self._cached: tuple[float, PromptTemplate] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> PromptTemplate:
        now = time.monotonic()
        with self._lock:
            if self._cached and now - self._cached[0] < self.ttl_s:
                return self._cached[1]
        template = self._remote()
        if template is None:
            try:
                template = self.registry.get(self.name, label=PRODUCTION)
            except NotFoundError:
                template = self.registry.seed(self.name)
        with self._lock:
            self._cached = (now, template)
        return template

    def _remote(self) -> PromptTemplate | None:
        """Langfuse's production version, or None (not configured, or unreachable: fall back)."""
        if self.remote is None:
            return None
        try:
            return self.remote.get(self.name)
        except BackendError as exc:
            self.remote_failures += 1
            if self.remote_failures == 1 or self.remote_failures % 100 == 0:
                log.warning(
                    "using the local prompt registry: %s (failures=%d)", exc, self.remote_failures
                )
            return None
