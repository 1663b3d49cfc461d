"""Walking the live OpenAPI document: its operations, and a concrete path for each."""

from __future__ import annotations

import uuid
from typing import Any


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (method, path template, operation) of the document, in its order."""
    return [
        (method.upper(), template, operation)
        for template, item in document["paths"].items()
        for method, operation in item.items()
    ]


def concrete(template: str, operation: dict[str, Any]) -> str:
    """A path for ``template`` whose ids are well-formed for their schema and name nothing."""
    path = template
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "path":
            continue
        schema = parameter.get("schema", {})
        if schema.get("format") == "uuid":
            value = str(uuid.uuid4())
        elif schema.get("type") == "integer":
            value = "987654321"
        else:
            value = "no-such-thing"
        path = path.replace("{" + parameter["name"] + "}", value)
    return path
