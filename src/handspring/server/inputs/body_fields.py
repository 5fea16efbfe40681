"""Field types the contracts' JSON bodies share, declared so that the OpenAPI schema says
exactly what the code accepts: no `minItems` the code does not hold to, and no boolean
passed off as an integer (pydantic's lax mode reads `true` as 1)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

NO_INPUTS = "no inputs given"

# `dimensions` of every contract: a JSON integer, 1 or more (the model's width is checked
# once the model is known).
Dimensions = Annotated[int, Field(strict=True, ge=1)]
# A JSON boolean: `1` and `"yes"` are refused, as the schema's "type": "boolean" says.
JsonBool = Annotated[bool, Field(strict=True)]


def _refuse_empty_list(value: Any) -> Any:
    # Checked before a union is tried member by member, so an empty list gets one plain
    # message rather than one per member.
    if isinstance(value, list) and not value:
        raise PydanticCustomError("too_short", NO_INPUTS)
    return value


NotEmpty = BeforeValidator(_refuse_empty_list)
NonEmptyStrings = Annotated[list[str], Field(min_length=1), NotEmpty]
TokenIds = Annotated[list[int], Field(min_length=1)]
TokenIdLists = Annotated[list[list[int]], Field(min_length=1)]
