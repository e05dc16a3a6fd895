"""Validating request and response bodies against Ultravox's published OpenAPI 3.0 schema.

OpenAPI 3.0 is not JSON Schema: ``nullable`` must become a ``null`` alternative, component ``$ref``s must
point into ``$defs``, and ``readOnly``/``writeOnly`` relax ``required`` depending on the direction. The
YAML (260 KB) is parsed once, converted once per direction and the validators compiled once, because the
simulator validates every create and must sustain thousands of requests a second.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

from dialer.sip import check_sip_host


OPENAPI_PATH = Path(__file__).with_name('openapi.yaml')
_REF_PREFIX = '#/components/schemas/'
# Annotations only: dropping them keeps the converted schema small and validation fast.
_DROPPED = frozenset({'description', 'example', 'deprecated', 'default', 'readOnly', 'writeOnly', 'title'})

Direction = Literal['request', 'response']


@functools.cache
def load_openapi() -> dict[str, Any]:
    """The parsed OpenAPI document (parsed on first use, then kept in memory)."""
    loader = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)
    with OPENAPI_PATH.open(encoding='utf-8') as handle:
        document: dict[str, Any] = yaml.load(handle, Loader=loader)  # noqa: S506  safe loader either way
    return document


def _convert(node: Any, direction: Direction, *, strict_objects: bool) -> Any:  # noqa: C901, PLR0912  one branch per keyword
    if isinstance(node, list):
        return [_convert(item, direction, strict_objects=strict_objects) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key == 'nullable':
            continue
        if key == '$ref':
            out[key] = '#/$defs/' + value.removeprefix(_REF_PREFIX)
        elif key == 'properties':
            out[key] = {name: _convert(sub, direction, strict_objects=strict_objects) for name, sub in value.items()}
        elif key == 'required':
            hidden = 'readOnly' if direction == 'request' else 'writeOnly'
            props = node.get('properties', {})
            kept = [name for name in value if not props.get(name, {}).get(hidden)]
            if kept:
                out[key] = kept
        elif key == 'format' and value not in {'uuid', 'date-time', 'date', 'time', 'email', 'uri'}:
            continue  # protobuf formats (enum, int32, double, ...) mean nothing to JSON Schema
        else:
            out[key] = _convert(value, direction, strict_objects=strict_objects)
    if strict_objects and 'properties' in out and 'additionalProperties' not in out:
        out['additionalProperties'] = False
    if node.get('nullable'):
        if isinstance(out.get('type'), str) and 'enum' not in out:
            out['type'] = [out['type'], 'null']
        else:
            out = {'anyOf': [{'type': 'null'}, out]}
    return out


@functools.cache
def json_schema_defs(direction: Direction, *, strict_objects: bool = False) -> dict[str, Any]:
    """Every component schema converted to JSON Schema 2020-12, keyed by component name."""
    schemas = load_openapi()['components']['schemas']
    return {name: _convert(schema, direction, strict_objects=strict_objects) for name, schema in schemas.items()}


@functools.cache
def validator_for(
    component: str, direction: Direction, *, strict_objects: bool = False, check_formats: bool = False
) -> Draft202012Validator:
    """A compiled validator for one component (e.g. ``ultravox.v1.StartCallRequest``)."""
    defs = json_schema_defs(direction, strict_objects=strict_objects)
    if component not in defs:
        raise KeyError(f'no component schema {component!r} in {OPENAPI_PATH.name}')
    schema = {'$defs': defs, '$ref': f'#/$defs/{component}'}
    Draft202012Validator.check_schema({'$defs': {component: defs[component]}})
    return Draft202012Validator(schema, format_checker=FormatChecker() if check_formats else None)


# --- a fast boolean validator compiled to closures ----------------------------------------------------
# jsonschema spends ~250 µs per create body (it re-creates a validator per subschema); these closures
# answer "valid?" in a few µs. jsonschema still produces the message whenever the answer is "no", and
# any keyword the compiler does not know makes it defer to jsonschema for that subschema.

Check = Callable[[Any], bool]
_TYPES: dict[str, Callable[[Any], bool]] = {
    'object': lambda v: isinstance(v, dict),
    'array': lambda v: isinstance(v, list),
    'string': lambda v: isinstance(v, str),
    'boolean': lambda v: isinstance(v, bool),
    'null': lambda v: v is None,
    'number': lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    'integer': lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}
_KNOWN = frozenset({
    'type', '$ref', 'properties', 'allOf', 'anyOf', 'oneOf', 'format', 'items', 'required', 'enum',
    'maxLength', 'minLength', 'additionalProperties', 'pattern', 'maxItems', 'minItems', 'maximum', 'minimum',
})  # fmt: skip


class _Compiler:
    def __init__(self, defs: dict[str, Any], root: dict[str, Any]) -> None:
        self.defs = defs
        self.root = root
        self.compiled: dict[str, Check] = {}

    def ref(self, name: str) -> Check:
        if name not in self.compiled:
            # placeholder while compiling, so a recursive schema refers to itself by late lookup
            self.compiled[name] = lambda v: self.compiled[name](v)  # noqa: PLW0108
            self.compiled[name] = self.schema(self.defs[name])
        return self.compiled[name]

    def schema(self, node: Any) -> Check:  # noqa: C901, PLR0912  one branch per keyword reads best
        if node is True or node == {}:
            return lambda _v: True
        if node is False:
            return lambda _v: False
        if set(node) - _KNOWN:
            slow = Draft202012Validator({**self.root, **node})
            return lambda v: bool(slow.is_valid(v))
        checks: list[Check] = []
        if 'type' in node:
            types = [_TYPES[t] for t in ([node['type']] if isinstance(node['type'], str) else node['type'])]
            if len(types) == 1:
                checks.append(types[0])
            else:
                checks.append(lambda v: any(t(v) for t in types))
        if '$ref' in node:
            target = node['$ref'].removeprefix('#/$defs/')
            self.ref(target)
            compiled = self.compiled
            checks.append(lambda v: compiled[target](v))  # noqa: PLW0108  late lookup for recursion
        if 'enum' in node:
            allowed = node['enum']
            checks.append(lambda v: any(v == a and isinstance(v, bool) == isinstance(a, bool) for a in allowed))
        if 'allOf' in node:
            every = [self.schema(s) for s in node['allOf']]
            checks.append(lambda v: all(s(v) for s in every))
        if 'anyOf' in node:
            some = [self.schema(s) for s in node['anyOf']]
            checks.append(lambda v: any(s(v) for s in some))
        if 'oneOf' in node:
            one = [self.schema(s) for s in node['oneOf']]
            checks.append(lambda v: sum(1 for s in one if s(v)) == 1)
        checks.extend(self._object(node))
        checks.extend(self._scalar(node))
        if not checks:
            return lambda _v: True
        if len(checks) == 1:
            return checks[0]

        def check_all(v: Any) -> bool:
            for check in checks:  # noqa: SIM110  a plain loop is measurably faster than all(genexpr)
                if not check(v):
                    return False
            return True

        return check_all

    def _object(self, node: dict[str, Any]) -> list[Check]:
        checks: list[Check] = []
        props = {name: self.schema(sub) for name, sub in node.get('properties', {}).items()}
        extra = node.get('additionalProperties', True)
        extra_check = None if extra is True else self.schema(extra)
        if props or extra_check is not None:

            def check_object(v: Any) -> bool:
                if not isinstance(v, dict):
                    return True
                for key, value in v.items():
                    check = props.get(key, extra_check)
                    if check is not None and not check(value):
                        return False
                return True

            checks.append(check_object)
        if 'required' in node:
            required = node['required']
            checks.append(lambda v: not isinstance(v, dict) or all(r in v for r in required))
        if 'items' in node:
            item = self.schema(node['items'])
            checks.append(lambda v: not isinstance(v, list) or all(item(x) for x in v))
        checks.extend(_length_checks(node, 'minItems', 'maxItems', list))
        return checks

    def _scalar(self, node: dict[str, Any]) -> list[Check]:
        checks: list[Check] = []
        if 'pattern' in node:
            search = re.compile(node['pattern']).search
            checks.append(lambda v: not isinstance(v, str) or search(v) is not None)
        checks.extend(_length_checks(node, 'minLength', 'maxLength', str))
        numeric = _TYPES['number']
        if 'minimum' in node:
            low = node['minimum']
            checks.append(lambda v: not numeric(v) or v >= low)
        if 'maximum' in node:
            high = node['maximum']
            checks.append(lambda v: not numeric(v) or v <= high)
        return checks


def _length_checks(node: dict[str, Any], low_key: str, high_key: str, kind: type[str | list[Any]]) -> list[Check]:
    checks: list[Check] = []
    if low_key in node:
        low: int = node[low_key]
        checks.append(lambda v: not isinstance(v, kind) or len(v) >= low)
    if high_key in node:
        high: int = node[high_key]
        checks.append(lambda v: not isinstance(v, kind) or len(v) <= high)
    return checks


@functools.cache
def fast_check(component: str, direction: Direction, *, strict_objects: bool = False) -> Check:
    """A compiled ``body -> bool`` for one component; agrees with jsonschema (formats not checked)."""
    defs = json_schema_defs(direction, strict_objects=strict_objects)
    return _Compiler(defs, {'$defs': defs}).ref(component)


def _path_of(error_path: Any) -> str:
    return '.'.join(str(part) for part in error_path) or '(body)'


def schema_errors(body: Any, component: str, direction: Direction = 'request', *, strict: bool = False) -> list[str]:
    """Problems with ``body`` as readable ``field: message`` strings (empty when valid)."""
    if direction == 'request' and fast_check(component, direction, strict_objects=strict)(body):
        return []
    validator = validator_for(component, direction, strict_objects=strict, check_formats=direction == 'response')
    error = best_match(validator.iter_errors(body))
    if error is None:
        return []
    return [f'{_path_of(error.absolute_path)}: {error.message}']


# --- rules the real API enforces beyond the schema ----------------------------------------------------

_SIP_TO = re.compile(r'^sip:(?P<user>[^@;:\s]+)@(?P<host>[^;\s]+)(?:;transport=(?:tcp|tls))?$')


def sip_to_parts(uri: str) -> tuple[str, str] | None:
    """``(user, host[:port])`` of a valid outgoing SIP ``to`` URI, or None."""
    match = _SIP_TO.match(uri)
    if not match:
        return None
    try:
        check_sip_host(match.group('host'))
    except ValueError:
        return None
    return match.group('user'), match.group('host')


def semantic_errors(body: dict[str, Any]) -> list[str]:
    """Checks beyond the schema: metadata keys and the SIP ``to`` URI."""
    errors: list[str] = []
    metadata = body.get('metadata')
    if isinstance(metadata, dict):
        errors.extend(
            f'metadata.{key}: keys starting with "ultravox." are reserved'
            for key in metadata
            if key.startswith('ultravox.')
        )
    outgoing = ((body.get('medium') or {}).get('sip') or {}).get('outgoing')
    if isinstance(outgoing, dict):
        to = outgoing.get('to')
        if not isinstance(to, str) or not to:
            errors.append('medium.sip.outgoing.to: required')
        elif sip_to_parts(to) is None:
            expected = 'sip:user@host[:port][;transport=tcp|tls]'
            errors.append(f'medium.sip.outgoing.to: {json.dumps(to)} is not a SIP URI ({expected})')
    return errors
