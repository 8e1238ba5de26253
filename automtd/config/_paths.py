"""``ConfigPath``: the path type of every config key that names a file or folder.

Validation expands ``${VAR}``, ``${VAR:-default}`` and ``~`` (:func:`automtd.utils.expand_path`), so
code reading a config always gets a usable path; dumping the config gives the text as written, so a
config stored with a study or a checkpoint stays portable to machines with other folders.
"""

from __future__ import annotations

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from automtd.utils import expand_path

__all__ = ["ConfigPath"]


class ConfigPath(str):
    """A path from a config: the string is the expanded path, ``raw`` the text as written."""

    raw: str

    def __new__(cls, raw: str) -> ConfigPath:
        path = super().__new__(cls, expand_path(raw))
        path.raw = raw
        return path

    def __reduce__(self) -> tuple[type[ConfigPath], tuple[str]]:
        return (type(self), (self.raw,))

    def __deepcopy__(self, memo: dict[int, object]) -> ConfigPath:
        return self

    def __copy__(self) -> ConfigPath:
        return self

    @classmethod
    def _validate(cls, value: str) -> ConfigPath:
        # an unset ${VAR} raises ConfigError, a ValueError: pydantic reports it under the key
        return value if isinstance(value, ConfigPath) else cls(value)

    @staticmethod
    def _dump(value: str) -> str:
        return value.raw if isinstance(value, ConfigPath) else str(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: object, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls._validate,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(cls._dump),
        )
