"""Typed request bodies, and the JSON parser every POST body goes through.

Bodies are parsed by pydantic's JSON parser (``pydantic_core.from_json``) instead of
``json.loads``: it refuses lone surrogates (``"\\ud800"``) and nesting deeper than its recursion
limit (200) with an error instead of a RecursionError, whatever the depth.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import pydantic_core
from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import AfterValidator, AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field
from starlette.responses import Response

from ..errors import InputError
from ..validation import check_metadata, check_text


def _text(value: str) -> str:
    try:
        return check_text(value, "the text")
    except InputError as exc:
        raise ValueError(str(exc)) from None


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    try:
        return check_metadata(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("it may not be empty or blank")
    return value


# a string that is text (no lone surrogate): refused with a 400 before any search or write
Text = Annotated[str, AfterValidator(_text)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
FilterValue = Text | bool | int | Finite


class SearchBody(BaseModel):
    """``POST /api/search``: the query parameters of ``GET /api/search`` as a JSON object."""

    model_config = ConfigDict(extra="ignore")

    q: Text = Field(validation_alias=AliasChoices("q", "query"), description="the query")
    k: int = Field(10, description="results to return (1 to the limit, 100 by default)")
    offset: int = Field(0, description="results to skip (pagination)")
    mode: Text = Field("hybrid", description="hybrid, semantic or lexical")
    fusion: Text | None = Field(None, description="rrf or convex (default: the index's)")
    alpha: Finite | None = Field(None, description="weight of the dense score (convex)")
    where: dict[Text, FilterValue] | list[Text] | None = Field(
        None, description='metadata filters: {"key": "value"} or ["key:value"]'
    )
    source: Text | None = Field(None, description="glob over the relative source")


class DocumentIn(BaseModel):
    """One document of ``POST /api/documents``."""

    model_config = ConfigDict(extra="ignore")

    id: Annotated[Text, Field(max_length=500), AfterValidator(_not_blank)]
    text: Annotated[Text, AfterValidator(_not_blank)]
    title: Text = ""
    metadata: Annotated[dict[str, Any], AfterValidator(_metadata)] = Field(default_factory=dict)


def _unwrap(body: Any) -> Any:
    """``{"documents": [...]}`` is the same as ``[...]``."""
    if isinstance(body, dict) and "documents" in body:
        return body["documents"]
    return body


DocumentsBody = Annotated[list[DocumentIn], BeforeValidator(_unwrap), Field(min_length=1)]


class JsonRequest(Request):
    """A request whose JSON body is parsed by pydantic's parser (see the module docstring)."""

    async def json(self) -> Any:
        if not hasattr(self, "_parsed_json"):
            try:
                self._parsed_json = pydantic_core.from_json(await self.body())
            except ValueError as exc:  # FastAPI answers a JSONDecodeError as a validation error
                raise json.JSONDecodeError(str(exc), "", 0) from None
        return self._parsed_json


class JsonRoute(APIRoute):
    """Routes whose body is read through ``JsonRequest``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return route
