"""The plan file's schema as pydantic models, and its one-line validation errors.

:func:`read_plan_file` checks the structure of a plan mapping (keys, types, ranges); the checks that
need the method registry (method names, ranks, the recomputed counts) belong to
:meth:`automtd.plan.Plan.from_dict`, which builds the plan from the validated file.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from pydantic_core import ErrorDetails

from automtd._errors import ConfigError, RankError

__all__ = ["FIX", "PlanFile", "LayerEntry", "ShapeEntry", "TotalsEntry", "read_plan_file"]

FIX = "regenerate the plan with `automtd plan` or fix the file"

Count = Annotated[StrictInt, Field(ge=0)]
Positive = Annotated[StrictInt, Field(ge=1)]
Ratio = Annotated[float, Field(strict=True)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArchitectureEntry(_Entry):
    name: Annotated[str, Field(min_length=1)]
    kwargs: dict[str, object] | None = None


class ShapeEntry(_Entry):
    """The fields of :class:`automtd.methods.LayerShape`, with its defaults."""

    kind: Literal["conv", "linear"]
    in_channels: Positive
    out_channels: Positive
    kernel_size: tuple[Positive, Positive] = (1, 1)
    stride: tuple[Positive, Positive] = (1, 1)
    padding: tuple[Count, Count] | Literal["same", "valid"] = (0, 0)
    dilation: tuple[Positive, Positive] = (1, 1)
    groups: Positive = 1
    bias: StrictBool = False
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros"


class LayerEntry(_Entry):
    """One replaced layer; the counts are optional (recomputed on load and compared when given)."""

    name: Annotated[str, Field(min_length=1)]
    method: str
    ranks: list[StrictInt]
    shape: ShapeEntry
    in_hw: tuple[Positive, Positive]
    params_before: Count | None = None
    params_after: Count | None = None
    macs_before: Count | None = None
    macs_after: Count | None = None


class TotalsEntry(_Entry):
    params_before: Count
    params_after: Count
    macs_before: Count
    macs_after: Count
    params_ratio: Ratio | None = None
    macs_ratio: Ratio | None = None


class SkippedEntry(_Entry):
    name: str
    reason: str


class PlanFile(_Entry):
    """A plan file (YAML or JSON): the keys, in the order :meth:`automtd.plan.Plan.to_dict` writes them."""

    version: StrictInt
    architecture: ArchitectureEntry
    fingerprint: Annotated[str, Field(min_length=1)]
    input_size: tuple[Positive, Positive, Positive]
    totals: TotalsEntry
    layers: list[LayerEntry]
    skipped: list[SkippedEntry] | None = None


def read_plan_file(data: object) -> PlanFile:
    """Validate the structure of a plan mapping; the first problem is a one-line :class:`ConfigError`.

    A wrong rank type is a :class:`RankError`, as the registry's rank checks raise.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"plan must be a mapping, got {type(data).__name__}; {FIX}")
    try:
        return PlanFile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        places = {_place(err["loc"], data) for err in errors}
        more = f" (and {len(places) - 1} more)" if len(places) > 1 else ""
        loc = errors[0]["loc"]
        error = RankError if len(loc) > 2 and loc[0] == "layers" and loc[2] == "ranks" else ConfigError
        raise error(_message(errors[0], data) + more) from None


def _message(err: ErrorDetails, data: Mapping[str, object]) -> str:
    where, model, path = _locate(err["loc"], data)
    kind = err["type"]
    if kind == "missing" and isinstance(err["loc"][-1], int):
        return f"{_join(where, path).rpartition('[')[0]} has too few items; {FIX}"
    if kind in ("extra_forbidden", "missing") and path:
        key = path.pop()
        where = _join(where, path)
        if kind == "missing":
            return f"{where}: missing key {key!r}; add it, or regenerate the plan with `automtd plan`"
        allowed = ", ".join(model.model_fields) if model is not None else "none"
        return f"{where}: unknown key {key!r}; allowed: {allowed}; remove it or fix its spelling"
    allowed = err["msg"].removeprefix("Input should be ").removeprefix("Value should be ")
    if kind in ("model_type", "dict_type"):
        allowed = "a mapping of keys"
    shown = repr(err["input"])
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{_join(where, path)} = {shown} is invalid; allowed: {allowed}; {FIX}"


def _place(loc: tuple[int | str, ...], data: Mapping[str, object]) -> str:
    """The key an error is about, without list indices (the alternatives of a union count once)."""
    where, _, path = _locate(loc, data)
    return re.sub(r"\[\d+\]", "", _join(where, path))


def _join(where: str, path: Sequence[str]) -> str:
    if not path:
        return where
    return f"{where}.{'.'.join(path)}" if where == "plan" else f"{where}: {'.'.join(path)}"


def _locate(loc: tuple[int | str, ...], data: Mapping[str, object]) -> tuple[str, type[BaseModel] | None, list[str]]:
    """``(where, model, path)`` of an error location.

    ``where`` names the layer for entries of ``layers`` (by its name when it has one), ``model`` is the
    pydantic model that holds the last key and ``path`` the keys below ``where`` (list indices as
    ``[i]``, union tags left out).
    """
    where = "plan"
    parts = list(loc)
    model: type[BaseModel] | None = PlanFile
    if len(parts) >= 2 and parts[0] in ("layers", "skipped") and isinstance(parts[1], int):
        field, index = parts[0], parts[1]
        where = f"plan.{field}[{index}]"
        items = data.get(field)
        item = items[index] if isinstance(items, list) and index < len(items) else None
        name = item.get("name") if field == "layers" and isinstance(item, Mapping) else None
        if isinstance(name, str) and name:
            where = f"layer {name!r}"
        parts = parts[2:]
        model = LayerEntry if field == "layers" else SkippedEntry
    path: list[str] = []
    for part in parts:
        if isinstance(part, int):
            if path:
                path[-1] += f"[{part}]"
            continue
        if model is None:
            continue  # a union member's tag, not a key
        path.append(part)
        info = model.model_fields.get(part)
        if info is None:
            break
        model = _model_in(info.annotation)
    return where, model, path


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The pydantic model a field holds (directly or inside ``X | None``), else ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
