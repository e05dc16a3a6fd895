"""Ultravox's OpenAPI 3.0 component schemas as JSON Schema validators, for tests.

OpenAPI 3.0 is not JSON Schema: ``nullable: true`` becomes a ``null`` alternative, component
``$ref``s are pointed into ``$defs``, and a request never has to carry ``readOnly`` properties.
Optionally every object is closed (``additionalProperties: false``) so that a field the schema
does not know (e.g. ``templateContext`` on a StartCallRequest) fails validation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator


REPO = Path(__file__).resolve().parent.parent
CANDIDATES = (REPO / 'simulator' / 'openapi.yaml', REPO.parent / 'shared' / 'ultravox' / 'openapi.yaml')
_REF_PREFIX = '#/components/schemas/'
# protobuf formats (enum, int32, ...) mean nothing to JSON Schema; annotations do not validate.
_DROPPED = frozenset({'nullable', 'readOnly', 'writeOnly', 'example', 'deprecated', 'format', 'description'})


def openapi_path() -> Path | None:
    return next((path for path in CANDIDATES if path.is_file()), None)


@functools.cache
def _document() -> dict[str, Any]:
    path = openapi_path()
    if path is None:
        pytest.skip('Ultravox openapi.yaml not found (simulator/ or ../shared/ultravox/)')
    with path.open(encoding='utf-8') as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


def _required(node: dict[str, Any]) -> list[str]:
    # Requests never carry server-generated (readOnly) fields.
    props = node.get('properties', {})
    return [name for name in node['required'] if not props.get(name, {}).get('readOnly')]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema.get('type'), str) and 'enum' not in schema:
        return {**schema, 'type': [schema['type'], 'null']}
    return {'anyOf': [{'type': 'null'}, schema]}


def _convert(node: Any, *, closed: bool) -> Any:
    if isinstance(node, list):
        return [_convert(item, closed=closed) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == '$ref':
            out[key] = '#/$defs/' + value.removeprefix(_REF_PREFIX)
        elif key == 'properties':
            out[key] = {name: _convert(sub, closed=closed) for name, sub in value.items()}
        elif key == 'required':
            if _required(node):
                out[key] = _required(node)
        else:
            out[key] = _convert(value, closed=closed)
    # Safe: no component combines several allOf parts whose properties would then exclude each other.
    if closed and 'properties' in out and 'additionalProperties' not in out:
        out['additionalProperties'] = False
    return _nullable(out) if node.get('nullable') else out


@functools.cache
def validator(component: str, *, closed: bool = True) -> Draft202012Validator:
    """A validator for one component, e.g. ``ultravox.v1.StartCallRequest``."""
    schemas = _document()['components']['schemas']
    defs = {name: _convert(schema, closed=closed) for name, schema in schemas.items()}
    schema = {'$defs': defs, '$ref': f'#/$defs/{component}'}
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(body: Any, component: str, *, closed: bool = True) -> list[str]:
    """Every problem with ``body`` as ``path: message`` (empty when valid)."""
    return [
        f'{".".join(str(p) for p in error.absolute_path) or "(body)"}: {error.message}'
        for error in validator(component, closed=closed).iter_errors(body)
    ]
