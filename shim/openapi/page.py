"""What the ``/docs`` page shows, read from the OpenAPI document (no Flask here).

Every piece of text from the document is escaped before the little markup the descriptions
use (paragraphs, ``- `` lists, backticks, ``**bold**``) is turned into HTML.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
METHOD_ORDER = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Row:
    """One line of a table: a named thing, its type, whether it is required, what it means."""

    name: str
    type: Markup
    required: bool
    description: Markup
    where: str = ""


@dataclass(frozen=True)
class Answer:
    """One response of an operation."""

    status: str
    description: Markup
    headers: list[Row]
    body: Markup | None
    examples: list[tuple[str, str]]


@dataclass(frozen=True)
class OperationView:
    """One operation as the page lists it."""

    method: str
    path: str
    anchor: str
    summary: str
    description: Markup
    security: list[str]
    parameters: list[Row]
    bodies: list[tuple[str, Markup]]
    body_example: str | None
    answers: list[Answer]


@dataclass(frozen=True)
class SchemaView:
    """One named schema and its members."""

    name: str
    anchor: str
    members: list[Row]


@dataclass
class Page:
    """Everything the template renders."""

    title: str
    version: str
    openapi: str
    description: Markup
    operations: list[OperationView] = field(default_factory=list)
    other_answers: list[Answer] = field(default_factory=list)
    schemas: list[SchemaView] = field(default_factory=list)
    security: list[Row] = field(default_factory=list)


def text(value: str | None) -> Markup:
    """Return the document's light markup as safe HTML (everything escaped first)."""
    blocks = []
    for block in re.split(r"\n\s*\n", (value or "").strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if all(line.startswith("- ") or not line.startswith(("-",)) for line in lines) and \
                lines[0].startswith("- "):
            items: list[str] = []
            current: list[str] = []
            for line in lines:
                if line.startswith("- ") and current:
                    items.append(" ".join(current))
                    current = []
                current.append(line.removeprefix("- "))
            items.append(" ".join(current))
            blocks.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items)
                          + "</ul>")
        else:
            blocks.append(f"<p>{_inline(' '.join(lines))}</p>")
    return Markup("".join(blocks))  # noqa: S704 (built from escaped text only)


def _inline(value: str) -> str:
    escaped = str(escape(value))
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


def anchor(*parts: str) -> str:
    """Return an HTML id made of ``parts``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(parts)).strip("-").lower()


def type_of(schema: dict[str, Any] | None, document: dict[str, Any]) -> Markup:
    """Return a one-line description of a schema: type, format and constraints, with links."""
    if not schema:
        return Markup("any")
    if "$ref" in schema:
        kind, name = _ref(schema["$ref"], document)
        if kind == "schemas":
            return Markup('<a href="#{}">{}</a>').format(anchor("schema", name), name)
        return type_of(_resolve(schema["$ref"], document), document)
    if "oneOf" in schema:
        return Markup(" or ").join(type_of(option, document) for option in schema["oneOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        described = Markup("array of ") + type_of(schema.get("items"), document)
    else:
        described = escape(kind)
        if "format" in schema:
            described += Markup(" <small>({})</small>").format(schema["format"])
    notes = []
    if "enum" in schema:
        notes.append("one of " + ", ".join(json.dumps(value) for value in schema["enum"]))
    if "pattern" in schema:
        notes.append(f"pattern {schema['pattern']}")
    if "minimum" in schema or "maximum" in schema:
        notes.append(f"{schema.get('minimum', '')}..{schema.get('maximum', '')}")
    if "default" in schema:
        notes.append(f"default {json.dumps(schema['default'])}")
    if schema.get("nullable"):
        notes.append("may be null")
    if notes:
        described += Markup(" <small>{}</small>").format("; ".join(notes))
    return described


def _ref(reference: str, document: dict[str, Any]) -> tuple[str, str]:
    parts = reference.removeprefix("#/").split("/")
    return parts[1], parts[-1]


def _resolve(reference: str, document: dict[str, Any]) -> dict[str, Any]:
    node: Any = document
    for part in reference.removeprefix("#/").split("/"):
        node = node[part]
    if not isinstance(node, dict):
        raise ValueError(f"{reference} does not name an object")
    return node


def _maybe(value: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    return _resolve(value["$ref"], document) if "$ref" in value else value


def _answer(status: str, response: dict[str, Any], document: dict[str, Any]) -> Answer:
    response = _maybe(response, document)
    headers = []
    for name, header in response.get("headers", {}).items():
        header = _maybe(header, document)
        headers.append(Row(name, type_of(header.get("schema"), document),
                           bool(header.get("required")), text(header.get("description"))))
    body, examples = None, []
    for media_type, media in response.get("content", {}).items():
        body = Markup("{} <small>{}</small>").format(type_of(media.get("schema"), document),
                                                      media_type)
        if "example" in media:
            examples.append(("", json.dumps(media["example"], indent=2)))
        for name, example in media.get("examples", {}).items():
            examples.append((name, json.dumps(example["value"], indent=2)))
    return Answer(status, text(response.get("description")), headers, body, examples)


def _operation(path: str, method: str, operation: dict[str, Any],
               document: dict[str, Any]) -> OperationView:
    parameters = []
    for parameter in operation.get("parameters", []):
        parameter = _maybe(parameter, document)
        schema = parameter.get("schema", {})
        parameters.append(Row(parameter["name"], type_of(schema, document),
                              bool(parameter.get("required")),
                              text(parameter.get("description") or schema.get("description")),
                              where=parameter["in"]))
    bodies, body_example = [], None
    for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
        bodies.append((media_type, type_of(media.get("schema"), document)))
        if "example" in media:
            body_example = json.dumps(media["example"], indent=2)
    security = []
    for requirement in operation.get("security", []):
        if not requirement:
            security.append("none")
        for scheme, needed in requirement.items():
            security.append(scheme + (f" ({', '.join(needed)})" if needed else ""))
    answers = [_answer(status, response, document)
               for status, response in operation.get("responses", {}).items()]
    return OperationView(method.upper(), path, anchor(method, path),
                         operation.get("summary", ""), text(operation.get("description")),
                         security, parameters, bodies, body_example, answers)


def page_model(document: dict[str, Any]) -> Page:
    """Return what the docs page shows of ``document``."""
    info = document["info"]
    page = Page(title=info["title"], version=info["version"], openapi=document["openapi"],
                description=text(info.get("description")))
    for path, item in document["paths"].items():
        for method in METHOD_ORDER:
            if method in item:
                page.operations.append(_operation(path, method, item[method], document))
    components = document.get("components", {})
    for name, response in components.get("responses", {}).items():
        page.other_answers.append(_answer(name, response, document))
    for name, schema in components.get("schemas", {}).items():
        required = set(schema.get("required", ()))
        members = [Row(member, type_of(value, document), member in required,
                       text(value.get("description")))
                   for member, value in schema.get("properties", {}).items()]
        page.schemas.append(SchemaView(name, anchor("schema", name), members))
    for name, scheme in components.get("securitySchemes", {}).items():
        kind = scheme["type"] + (f" {scheme['scheme']}" if "scheme" in scheme else "")
        page.security.append(Row(name, escape(kind), False, text(scheme.get("description"))))
    return page
