"""``${VAR}`` / ``${VAR:-default}`` and ``~`` in the paths of configs and plans."""

from __future__ import annotations

import os
import re

from automtd._errors import ConfigError

__all__ = ["expand_path"]

_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_path(value: str) -> str:
    """Expand ``${VAR}`` / ``${VAR:-default}`` and ``~`` in a path; an unset VAR without default is an error."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        got = os.environ.get(name)
        if got:
            return got
        if default is not None:
            return default
        raise ConfigError(
            f"path {value!r} uses ${{{name}}} but it is not set; export {name} or write ${{{name}:-DEFAULT}}"
        )

    return os.path.expanduser(_VAR.sub(sub, value))
