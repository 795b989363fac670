"""``Result``: the base of the SDK's typed results (``deeptrain.results``).

A result is a ``dict`` of exactly the fields the service returned, in their order, checked
by pydantic against the fields its class declares and readable as attributes::

    class Version(Result):
        id: str
        status: str
        metrics: dict[str, Any] | None = None

    v = Version({"id": "ab12", "status": "trained", "metrics": {"top1": 0.9}, "more": 1})
    v.status, v["metrics"]["top1"], v.more   # typed access, dict access, extra fields kept
    v.model_dump(mode="json")                # plain dicts and lists, ready for json.dumps

Being a real ``dict`` is what keeps scripts written against the untyped SDK working:
``v["status"]``, ``dict(v)``, ``{**v}``, ``v == {...}`` and ``json.dumps(v)`` behave as before.
Declared fields whose type is a ``Result`` (or a list of them) hold typed values; every
other value is kept exactly as given, so printing a result prints what the service
returned. A declared field with a default that the data leaves out is not added to the
dict; its attribute reads the default. Results are also pydantic types: a field of a
pydantic model can be a ``Result`` class, and ``model_validate`` / ``model_json_schema``
work as on a model (what a remote transport needs to parse and describe them).
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar, Iterable, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, create_model
from pydantic_core import core_schema, to_jsonable_python

R = TypeVar("R", bound="Result")
_CONFIG = ConfigDict(extra="allow", protected_namespaces=(), arbitrary_types_allowed=True)
_JSON_LEAVES = (str, int, float, bool, type(None))


class Result(dict):
    """A typed SDK result: a dict of the service's fields, validated by the pydantic model of its class."""

    _schema: ClassVar[type[BaseModel]]
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls)
        defaults = {k: v for base in reversed(cls.__mro__[1:]) for k, v in getattr(base, "_defaults", {}).items()}
        fields: dict[str, Any] = {}
        for name, hint in hints.items():
            if name.startswith("_") or typing.get_origin(hint) is ClassVar:
                continue
            if name in cls.__dict__:  # a class attribute would hide the field from __getattr__
                defaults[name] = cls.__dict__[name]
                delattr(cls, name)
            fields[name] = (hint, defaults.get(name, ...))
        cls._defaults = defaults
        cls._schema = create_model(cls.__name__, __config__=_CONFIG, __module__=cls.__module__, **fields)

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), /, **fields: Any) -> None:
        raw = {**dict(data), **fields}
        checked = self._schema.model_validate(raw)
        typed = {name: getattr(checked, name) for name in type(checked).model_fields if name in raw}
        super().__init__({k: typed[k] if k in typed and _holds_result(typed[k]) else v for k, v in raw.items()})

    # --- attribute access ----------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name in self._defaults:
            return self._defaults[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} fields are read as attributes; set {name!r} as an item")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"

    # --- the pydantic side ------------------------------------------------------------------
    @classmethod
    def model_validate(cls: type[R], obj: Any) -> R:
        return obj if isinstance(obj, cls) else cls(obj)

    @classmethod
    def many(cls: type[R], rows: Iterable[Mapping[str, Any]]) -> list[R]:
        """A list of results, one per row."""
        return [cls.model_validate(row) for row in rows]

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        return cls._schema.model_json_schema()

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]:
        """Plain dicts and lists all the way down; with ``mode="json"`` every value is JSON-ready."""
        return _plain(self, mode == "json")

    def model_dump_json(self, *, indent: int | None = None) -> str:
        import json

        return json.dumps(self.model_dump(mode="json"), indent=indent)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.model_validate, json_schema_input_schema=handler.generate_schema(cls._schema),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda v: _plain(v, False)))


def _holds_result(value: Any) -> bool:
    if isinstance(value, Result):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_result(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_result(v) for v in value.values())
    return False


def _plain(value: Any, as_json: bool) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v, as_json) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, as_json) for v in value]
    if as_json and not isinstance(value, _JSON_LEAVES):
        return to_jsonable_python(value, fallback=str)
    return value


def dump(doc: Any, mode: str = "json") -> Any:
    """``doc`` (a result, a list of them, or plain data holding some) as plain data."""
    return _plain(doc, mode == "json")
