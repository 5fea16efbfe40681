"""Hugging Face TEI's own OpenAPI document as a validator of requests and answers.

tei_openapi.json is `docs/openapi.json` of huggingface/text-embeddings-inference (v1.9.3),
copied unchanged: Apache License 2.0, Copyright Hugging Face. Its schemas are OpenAPI 3.0
(`nullable`); they are turned into JSON Schema (draft 7) here and checked with
jsonschema-rs.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

TEI_OPENAPI = json.loads((Path(__file__).with_name("tei_openapi.json")).read_text())


def _json_schema(schema: Any) -> Any:
    """OpenAPI 3.0's `nullable` as JSON Schema; everything else as it is."""
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _json_schema(v) for k, v in schema.items() if k not in ("nullable", "example")}
    if schema.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


_COMPONENTS = _json_schema(TEI_OPENAPI["components"])


@cache
def _validator(pointer: str) -> Any:
    """A validator of the schema at `pointer` (a JSON pointer into the document)."""
    node: Any = TEI_OPENAPI
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/")]
    schema = {"allOf": [_json_schema(node)], "components": _COMPONENTS}
    return jsonschema_rs.Draft7Validator(schema)


def _escape(path: str) -> str:
    return path.replace("/", "~1")


def _errors(pointer: str, instance: Any) -> list[str]:
    return [f"{e.instance_path}: {e.message}" for e in _validator(pointer).iter_errors(instance)]


def request_errors(path: str, body: Any) -> list[str]:
    """Where `body` does not conform to TEI's request schema of `POST path`."""
    pointer = f"/paths/{_escape(path)}/post/requestBody/content/application~1json/schema"
    return _errors(pointer, body)


def documented(path: str, method: str, status: int) -> bool:
    return str(status) in TEI_OPENAPI["paths"][path][method.lower()]["responses"]


def response_errors(path: str, method: str, status: int, body: Any) -> list[str]:
    """Where an answer does not conform to what TEI documents for that path and status
    (a status TEI does not document is an error too)."""
    if not documented(path, method, status):
        return [f"status {status} is not documented for {method.upper()} {path}"]
    response = TEI_OPENAPI["paths"][path][method.lower()]["responses"][str(status)]
    if "application/json" not in response.get("content", {}):
        return []  # no body documented (200 of /health)
    pointer = (
        f"/paths/{_escape(path)}/{method.lower()}/responses/{status}"
        "/content/application~1json/schema"
    )
    return _errors(pointer, body)
