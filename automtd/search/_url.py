"""Storage URLs: classify and normalise what ``--storage`` gives (SQLite, journal file, PostgreSQL)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from automtd._errors import StorageError
from automtd.search._redact import redact_url

__all__ = ["StorageKind", "StorageURL", "parse_storage_url"]

StorageKind = Literal["sqlite", "journal", "postgresql"]
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_ALLOWED = "sqlite:///PATH.db, journal:///PATH.log (or a .db/.log path) or postgresql+psycopg://USER@HOST:PORT/DB"
_SQLITE_FORMS = "write sqlite:///relative.db or sqlite:////abs/path.db"
# a scheme and a colon without '//' (``sqlite:/x.db``, ``sqlite:x.db``); one letter is a Windows drive
_SCHEME_ONLY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):(?!//)")


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL: its kind, the URL Optuna/SQLAlchemy get, and the file for file storages."""

    kind: StorageKind
    url: str
    path: Path | None = None

    def __str__(self) -> str:
        return redact_url(self.url)


def parse_storage_url(url: str) -> StorageURL:
    """Classify and normalise a storage URL or path; anything else is a :class:`StorageError`."""
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"storage {url!r} is empty; give {_ALLOWED}")
    raw = url.strip()
    scheme, sep, rest = raw.partition("://")
    if not sep:
        bare = _SCHEME_ONLY.match(raw)
        if bare:
            name = bare.group(1).lower()
            forms = _SQLITE_FORMS if name == "sqlite" else f"give {_ALLOWED}"
            raise StorageError(
                f"storage {redact_url(raw)!r} is a malformed {name}: URL (the scheme needs '://'); {forms}"
            )
        path = Path(raw).expanduser()
        if path.suffix in _SQLITE_SUFFIXES:
            return StorageURL("sqlite", f"sqlite:///{path.resolve()}", path.resolve())
        if path.suffix == ".log":
            return StorageURL("journal", str(path.resolve()), path.resolve())
        raise StorageError(f"storage {raw!r} is neither a URL nor a .db/.log path; give {_ALLOWED}")
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest in ("/", "/:memory:"):
            raise StorageError(f"storage {raw!r} names no database file; {_SQLITE_FORMS}")
        path = Path(rest[1:]).expanduser().resolve()
        if rest.endswith("/") or path.is_dir():
            raise StorageError(f"storage {raw!r} names a folder, not a database file; {_SQLITE_FORMS}")
        return StorageURL("sqlite", f"sqlite:///{path}", path)
    if scheme == "journal":
        if not rest.startswith("/") or rest == "/":
            raise StorageError(
                f"storage {raw!r} names no journal file; write journal:///relative.log or journal:////abs.log"
            )
        path = Path(rest[1:]).expanduser().resolve()
        return StorageURL("journal", str(path), path)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        if not rest or rest.startswith("/"):
            raise StorageError(
                f"storage {redact_url(raw)!r} names no host; write postgresql+psycopg://USER@HOST:PORT/DB"
            )
        _check_userinfo(raw, rest)
        return StorageURL("postgresql", f"postgresql+psycopg://{rest}")
    raise StorageError(f"storage scheme {scheme!r} in {redact_url(raw)!r} is not supported; give {_ALLOWED}")


def _check_userinfo(raw: str, rest: str) -> None:
    """Refuse a password holding an unescaped '@': SQLAlchemy would read the part after it as the host, and
    the driver would print that part in its errors."""
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    userinfo = head[: head.rfind("@")] if "@" in head else ""
    if "@" in userinfo.partition(":")[2]:
        raise StorageError(
            f"storage {redact_url(raw)!r}: the password holds an unescaped '@'; percent-encode it (@ as %40) "
            "or leave the password out of the URL and set PGPASSWORD"
        )
