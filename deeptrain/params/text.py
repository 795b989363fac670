"""Parameters as people type and read them: ``--param name=value`` strings and the parameter table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Literal

from deeptrain.params.resolve import resolve_params
from deeptrain.params.schema import HyperParams, ParamError, check_param_names, type_name

if TYPE_CHECKING:  # pragma: no cover
    from deeptrain.templates import Template

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_NONE = {"none", "null", "auto", ""}


def _convert(name: str, text: str, annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    origin = getattr(annotation, "__origin__", None)
    low = text.strip().lower()
    if origin is Literal:
        return text.strip()
    if args:  # Optional[X]
        if low in _NONE:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(name, text, inner[0])
    if annotation is bool:
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError
    if annotation is int:
        return int(text.strip())
    if annotation is float:
        value = float(text.strip())
        return value
    return text


def parse_cli_params(items: Iterable[str]) -> dict[str, Any]:
    """``["batch_size=32", "logreg=false"]`` -> ``{"batch_size": 32, "logreg": False}``.

    Each value is converted using its parameter's type: bool accepts true/false, 1/0,
    yes/no, on/off (any case); optional parameters accept none/null (and auto); ints and
    floats use Python's parsing. Range checks happen in ``resolve_params``.
    """
    result: dict[str, Any] = {}
    for item in items:
        name, sep, text = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParamError(None, item, f"expected name=value, got {item!r}",
                             message=f"invalid parameter {item!r}: expected name=value, e.g. batch_size=32")
        check_param_names([name])
        if name in result:
            raise ParamError(name, text, "given twice")
        annotation = HyperParams.model_fields[name].annotation
        try:
            result[name] = _convert(name, text, annotation)
        except ValueError:
            raise ParamError(name, text, f"expected {type_name(annotation)}",
                             message=f"invalid {name}={text!r}: expected {type_name(annotation)}"
                                     + (" (true/false, 1/0, yes/no)" if annotation is bool else "")) from None
    return result


# --- description ----------------------------------------------------------------------

def describe_params(template: "Template | None" = None) -> list[dict[str, Any]]:
    """One row per parameter: name, type, default (for this template), range, description, source.

    Rows are sorted by name, the seed's parameters first.
    """
    defaults = resolve_params(template, {}) if template is not None else HyperParams()
    template_defaults = dict(template.defaults) if template is not None else {}
    rows = []
    for name, field in HyperParams.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        range_ = str(extra.get("range", ""))
        if name == "image_size" and template is not None:
            range_ = f"32..1024, multiple of 16, >= {template.min_image_size} ({template.name})"
        if name == "lrate":
            default: Any = defaults.lrate
            description = f"{field.description}; default here: per_item_lrate x batch_size = {defaults.lrate:g}"
        else:
            default = getattr(defaults, name)
            description = field.description or ""
        rows.append({
            "name": name,
            "type": "float" if name == "lrate" else type_name(field.annotation),
            "default": default,
            "template_default": name in template_defaults,
            "range": range_,
            "description": description,
            "source": extra.get("source", "service"),
        })
    rows.sort(key=lambda r: (r["source"] != "seed", r["name"]))
    return rows