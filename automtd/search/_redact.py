"""Keep database passwords out of everything automtd prints, logs or stores.

Two forms carry a password in a storage URL, and both are handled wherever they appear in a text:

* the user info ``scheme://user:PASSWORD@host``; a password holding an unescaped ``@`` is masked up to the
  last ``@`` before the host (up to the last ``@`` of the URL when it also holds a ``/``);
* query parameters ``?password=...`` and their kin (``sslpassword``, ``pass``, ``passwd``, ``pwd``).

:func:`redact_url` replaces them by ``***`` (for output); :func:`strip_credentials` removes them (for the
URL stored with a study, which nothing connects with: workers are given the URL, see :func:`stored_config`).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from automtd.search._config import SearchConfig

__all__ = ["redact_url", "strip_credentials", "stored_config", "PASSWORD_KEYS"]

#: query parameter names whose value is a secret (lower case)
PASSWORD_KEYS = frozenset({"password", "sslpassword", "pass", "passwd", "pwd"})

# ``://user:`` and the rest of the token; the password ends at an '@' chosen by :func:`_password_end`
_USERINFO = re.compile(r"(://[^:/\s]*):(\S*)")
_QUERY_PASSWORD = re.compile(
    r"(?i)((?:^|[?&;\s])(?:" + "|".join(sorted(PASSWORD_KEYS, key=len, reverse=True)) + r")=)[^&;\s#]*"
)


def _password_end(rest: str) -> int:
    """Index of the '@' that ends the password in ``rest`` (what follows ``://user:``), or -1 if none.

    The last '@' before any '?' or '#' (a password may hold '@' and '/'); failing that, the last '@' of
    the token (a password holding '?' or '#').  Masking too much is the safe side.
    """
    query = re.search(r"[?#]", rest)
    head = rest[: query.start()] if query else rest
    return head.rfind("@") if "@" in head else rest.rfind("@")


def _mask_userinfo(text: str, replacement: str) -> str:
    def sub(m: re.Match[str]) -> str:
        rest = m.group(2)
        end = _password_end(rest)
        return m.group(0) if end < 0 else f"{m.group(1)}{replacement}{rest[end:]}"

    return _USERINFO.sub(sub, text)


def redact_url(url: str) -> str:
    """Return ``url`` (or any text holding URLs) with every password replaced by ``***``: safe to print or log."""
    return _QUERY_PASSWORD.sub(r"\1***", _mask_userinfo(str(url), ":***"))


def strip_credentials(url: str) -> str:
    """``url`` without its password (user info and password query parameters removed; the user name kept)."""
    text = _mask_userinfo(str(url), "")
    parts = urlsplit(text)
    if not parts.query:
        return text
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() not in PASSWORD_KEYS]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def stored_config(config: SearchConfig) -> dict[str, object]:
    """The config as stored with a study: JSON data, its storage URL without a password."""
    data = config.model_dump(mode="json")
    data["study"]["storage"] = strip_credentials(config.study.storage)
    return data
