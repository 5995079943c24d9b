"""The configuration reference (docs/configuration.md), generated from the settings model.

``python -m shared.config_reference > docs/configuration.md`` (``make docs``) writes it; a unit test
fails when the committed file differs from what this module generates, so the reference cannot drift
from ``shared/settings.py``.

The model is walked generically through ``model_fields`` and the fields' annotations: every nested
pydantic model becomes a section (``oicp.tls``, ``peers[].pull``) whose intro is the field's
description and the model's docstring, and every other field a key with its type, default,
constraints, description and environment variable. A field added to the settings appears here
without any change to this module.
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import sys
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import AnyHttpUrl, BaseModel, SecretStr
from pydantic.fields import FieldInfo

import shared.settings
from shared.settings import NodeSettings

EXAMPLE_FILE = "deploy/config/example.yaml"
#: Constraint attributes pydantic keeps in a field's metadata (annotated_types, StringConstraints,
#: pydantic's own general metadata), in the order they are shown.
_CONSTRAINTS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern")
_CONSTRAINT_WORDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "multiple_of": "multiple of"}


@dataclass(frozen=True)
class Key:
    """One configuration key (a leaf of the model)."""

    path: str  # dotted, lists as ``[]``: ``peers[].pull.page_size``
    type: str
    default: str  # markdown: a value, "required" or "(none)"
    constraints: str
    description: str
    env: str | None  # None inside a list: list items are not overridden key by key


@dataclass
class Section:
    """A nested model: its keys and the text that introduces it."""

    path: str  # "" for the top level
    intro: list[str]  # paragraphs
    keys: list[Key] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"`{self.path}`" if self.path else "Top level"


# ---- reading the model -------------------------------------------------------------------------


def _strip_annotated(tp: Any) -> tuple[Any, list[Any]]:
    """The bare type and the metadata of any ``Annotated`` around it."""
    metadata: list[Any] = []
    while get_origin(tp) is Annotated:
        tp, *extra = get_args(tp)
        metadata.extend(extra)
    return tp, metadata


def _without_none(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007 - built at run time
    return tp, False


def _model_of(tp: Any) -> tuple[type[BaseModel] | None, bool]:
    """The nested model a field holds (directly, optionally, or as list items) and whether in a list."""
    tp, _ = _without_none(_strip_annotated(tp)[0])
    if get_origin(tp) is list:
        (item,) = get_args(tp)
        item, _ = _without_none(_strip_annotated(item)[0])
        if inspect.isclass(item) and issubclass(item, BaseModel):
            return item, True
        return None, False
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return tp, False
    return None, False


def _map_model_of(tp: Any) -> type[BaseModel] | None:
    """The model of a map's values (``dict[str, Model]``: one section for every entry, ``path.<name>``)."""
    tp, _ = _without_none(_strip_annotated(tp)[0])
    if get_origin(tp) is dict:
        value, _ = _without_none(_strip_annotated(get_args(tp)[1])[0])
        if inspect.isclass(value) and issubclass(value, BaseModel):
            return value
    return None


def _type_name(tp: Any) -> str:
    """A reader's name for a type: int, float, string, bool, list of ..., one of `a`, `b`, secret."""
    tp, _ = _strip_annotated(tp)
    bare, optional = _without_none(tp)
    if optional:
        return f"{_type_name(bare)} or null"
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        key, value = get_args(tp)
        return f"map of {_type_name(key)} to {_type_name(value)}"
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(tp))
    if inspect.isclass(tp):
        if issubclass(tp, enum.Enum):
            return "one of " + ", ".join(f"`{m.value}`" for m in tp)
        if issubclass(tp, BaseModel):
            return f"section (`{tp.__name__}`)"
        names: list[tuple[type, str]] = [
            (bool, "bool"),  # before int: bool is an int
            (int, "int"),
            (float, "float"),
            (str, "string"),
            (SecretStr, "secret string"),
            (Path, "file path"),
            (AnyHttpUrl, "URL (http or https)"),
        ]
        for cls, name in names:
            if issubclass(tp, cls):
                return name
        return tp.__name__
    return str(tp)


def _constraint_values(metadata: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    for item in metadata:
        if isinstance(item, FieldInfo):  # Annotated[int, Field(ge=1)] keeps a FieldInfo
            yield from _constraint_values(item.metadata)
            continue
        for name in _CONSTRAINTS:
            value = getattr(item, name, None)
            if value is not None:
                yield name, value


def _describe_constraints(metadata: Iterable[Any], of: str) -> list[str]:
    parts = []
    for name, value in _constraint_values(metadata):
        if name == "pattern":
            parts.append(f"pattern `{value}`")
        elif name in ("min_length", "max_length"):
            unit = ("item" if of in ("list", "map") else "character") + ("" if value == 1 else "s")
            parts.append(f"{'at least' if name == 'min_length' else 'at most'} {value} {unit}")
        else:
            parts.append(f"{_CONSTRAINT_WORDS[name]} {value}")
    return parts


def _constraints(info: FieldInfo) -> str:
    """The field's own constraints, and those of its list items or map values."""
    outer = _inner_metadata(info.annotation)
    tp, _ = _without_none(_strip_annotated(info.annotation)[0])
    tp = _strip_annotated(tp)[0]
    origin = get_origin(tp)
    kind = "list" if origin is list else "map" if origin is dict else "value"
    parts = _describe_constraints([*info.metadata, *outer], kind)
    if origin in (list, dict):
        nested = _describe_constraints(_inner_metadata(get_args(tp)[-1]), "value")
        if nested:
            parts.append(f"each {'item' if origin is list else 'value'}: {', '.join(nested)}")
    return ", ".join(parts)


def _inner_metadata(tp: Any) -> list[Any]:
    """Metadata of an item type, looking through ``Annotated`` and ``| None`` in either order."""
    tp, metadata = _strip_annotated(tp)
    bare, optional = _without_none(tp)
    if optional:
        metadata.extend(_strip_annotated(bare)[1])
    return metadata


def _value(value: Any) -> str:
    """A default as it would be written in the YAML file."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # quoted only where YAML would read something else (`"oicp:"` would be a mapping, `""` null)
        return value if value and _yaml_reads(value) == value else json.dumps(value)
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _yaml_reads(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "*(none)*"
    if isinstance(value, dict) and value:
        # one entry a line: the rate limits' table of 20 operations stays readable
        return "<br>".join(f"`{k}: {_value(v)}`" for k, v in value.items())
    return f"`{_value(value)}`"


def _paragraphs(text: str | None) -> list[str]:
    """Docstring or description text as markdown paragraphs (reST ``code`` -> markdown `code`)."""
    if not text:
        return []
    text = inspect.cleandoc(text).replace("``", "`")
    return [" ".join(line.strip() for line in block.splitlines()) for block in re.split(r"\n\s*\n", text)]


def _sentences(text: str | None) -> list[str]:
    """A field description (a lower-case fragment in a table cell) as a sentence of its own."""
    return [p[0].upper() + p[1:] + ("" if p.endswith(".") else ".") for p in _paragraphs(text)]


def _docstring(model: type) -> str | None:
    """The model's own docstring; ``inspect.getdoc`` would inherit BaseModel's."""
    return model.__dict__.get("__doc__")


def _env_name(parts: list[str]) -> str:
    config = NodeSettings.model_config
    return str(config.get("env_prefix", "")) + str(config.get("env_nested_delimiter") or "__").join(parts).upper()


def _presence(info: FieldInfo, in_list: bool) -> str:
    if in_list:
        return "A list: every item is one entry of this section. Empty by default."
    if info.is_required():
        return "This section is required."
    if info.get_default(call_default_factory=True) is None:
        return "Optional: absent by default; set it to turn this on."
    return "May be left out: every key in it has a default unless marked required."


def _walk(model: type[BaseModel], path: str, env_parts: list[str] | None, intro: list[str], out: list[Section]) -> None:
    section = Section(path, intro)
    out.append(section)
    nested: list[tuple[str, list[str] | None, type[BaseModel], list[str]]] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        dotted = f"{path}.{key}" if path else key
        child_env = [*env_parts, key] if env_parts is not None else None
        if (mapped := _map_model_of(info.annotation)) is not None:
            paragraphs = [*_sentences(info.description), *_paragraphs(_docstring(mapped))]
            paragraphs.append(
                f"A map: each entry's name is yours (`{dotted}.<name>`), its value a section with the keys below. "
                + (
                    f"The whole map can be given as JSON in `{_env_name(child_env)}`, merged over the file's."
                    if child_env is not None
                    else ""
                )
            )
            nested.append((f"{dotted}.<name>", None, mapped, [p.strip() for p in paragraphs]))
            continue
        child, in_list = _model_of(info.annotation)
        if child is not None:
            child_path = dotted + ("[]" if in_list else "")
            paragraphs = [*_sentences(info.description), *_paragraphs(_docstring(child)), _presence(info, in_list)]
            if in_list and child_env is not None:
                paragraphs.append(
                    "Keys of list items have no environment variables of their own: the whole list can be "
                    f"given as JSON in `{_env_name(child_env)}`, which replaces the file's list."
                )
            nested.append((child_path, None if in_list else child_env, child, paragraphs))
            continue
        section.keys.append(
            Key(
                path=dotted,
                type=_type_name(info.annotation),
                default=_default(info),
                constraints=_constraints(info),
                description=" ".join(_paragraphs(info.description)),
                env=_env_name(child_env) if child_env is not None else None,
            )
        )
    for child_path, child_env, child, paragraphs in nested:
        _walk(child, child_path, child_env, paragraphs, out)


def sections(model: type[BaseModel] = NodeSettings) -> list[Section]:
    """Every section of the model in file order, each followed by its nested sections."""
    out: list[Section] = []
    _walk(model, "", [], ["Keys at the top of the file."], out)
    return out


def undocumented_keys(model: type[BaseModel] = NodeSettings) -> list[str]:
    """Keys whose field has no description (listed so that someone adds one in shared/settings.py)."""
    return [key.path for section in sections(model) for key in section.keys if not key.description]


# ---- writing markdown ----------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Table cells: a pipe would end the cell, even inside a code span."""
    return text.replace("|", "\\|").replace("\n", "<br>") or " "


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def _is_list_or_map(key: Key) -> bool:
    return key.type.startswith(("list of", "map of"))


def _key_cell(key: Key) -> str:
    text = f"`{key.path}`"
    if key.env is not None:
        text += f"<br>env `{key.env}`" + (" (JSON)" if _is_list_or_map(key) else "")
    return text


def render(model: type[BaseModel] = NodeSettings) -> str:
    """docs/configuration.md."""
    all_sections = sections(model)
    intro = _paragraphs(sys.modules[model.__module__].__doc__ or shared.settings.__doc__)
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m shared.config_reference` (`make docs`) from shared/settings.py: do not edit;"
        " a unit test fails when this file is out of date. -->",
        "",
    ]
    for paragraph in intro:
        lines += [paragraph, ""]
    lines += [
        f"A complete, commented file is [{EXAMPLE_FILE}](../{EXAMPLE_FILE}).",
        "",
        "How to read the tables:",
        "",
        "- **Key**: the dotted path of the key in the YAML file (`oicp.tls.client_ca_file` is `client_ca_file` "
        "inside `tls` inside `oicp`; `peers[]` is an item of the list `peers`), and below it the environment "
        "variable that overrides it.",
        "- Lists and maps are given in the environment as JSON (`OICP_P2P_OPERATOR_IDS='[\"DE*ABC\"]'`): a list "
        "replaces the file's, a map is merged key by key over the file's.",
        "- **Default**: the value when the key is left out; **required** keys have none. *(none)* is null: "
        "the feature is off or the value is derived, as the description says.",
        "- **Constraints**: the values the node accepts; anything else stops every service at start with a "
        "message naming the key.",
        "- A *secret string* is never logged or shown by the internal API.",
        "",
        "## Sections",
        "",
    ]
    for section in all_sections:
        indent = "  " * section.path.count(".")
        lines.append(f"{indent}- [{section.title}](#{_anchor(section.title)})")
    lines.append("")
    for section in all_sections:
        lines += [f"## {section.title}", ""]
        for paragraph in section.intro:
            lines += [paragraph, ""]
        if not section.keys:
            continue
        lines += ["| Key | Type | Default | Constraints | Description |", "| --- | --- | --- | --- | --- |"]
        for key in section.keys:
            cells = (_key_cell(key), key.type, key.default, key.constraints, key.description)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
