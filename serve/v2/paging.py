"""Clarifai's list pagination (``page`` from 1, ``per_page``) and the renderers' shared pieces."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

from fastapi import Query
from pydantic import BaseModel

MAX_PER_PAGE = 1000
DEFAULT_PER_PAGE = 128


class Page(BaseModel):
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def of(self, items: Sequence[Any]) -> list[Any]:
        return list(items[self.offset:self.offset + self.per_page])


def page_query(page: int = Query(1, ge=1, le=10**6, description="page number, from 1"),
               per_page: int = Query(DEFAULT_PER_PAGE, ge=1, le=MAX_PER_PAGE, description="items per page")) -> Page:
    return Page(page=page, per_page=per_page)


def timestamp(value: str | datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z`` (what the client's Timestamp parser needs; a naive time is UTC)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def native(record: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` carrying deeptrain's own record (a ``Struct`` to the client: any JSON), which the remote
    SDK reads back into its typed results."""
    return {"deeptrain": record}
