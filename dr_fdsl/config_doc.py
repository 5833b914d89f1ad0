"""The resolved config as YAML a person reads: each key with its type, its default and the comment it carries in
its dataclass (``train.py --print-config [section]``). The dataclasses stay the single source of truth: the
comments are read from their source, never copied."""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
import typing
from functools import cache
from typing import Any

import yaml

from dr_fdsl.config import Config
from dr_fdsl.errors import ConfigError
from dr_fdsl.settings import _default, _type_name, section_used, to_dict

_FIELD = re.compile(r"^\s*(\w+)\s*:")


@cache
def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` of a dataclass: the comment at the end of the field's line, else the block of comment
    lines right above it (joined into one line). A composed section (``settings.compose``: ``BankConfig``,
    ``AugmentConfig``, ``Config``) has no source of its own: its fields' comments are its bases'."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object and dataclasses.is_dataclass(klass):
            comments.update(_own_comments(klass))
    return comments


def _own_comments(cls: type) -> dict[str, str]:
    """:func:`field_comments` of the fields written in ``cls``'s own source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    comments: dict[str, str] = {}
    above: list[str] = []
    trailing: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            trailing[token.start[0]] = token.string.lstrip("#").strip()
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(line)
        if match and match.group(1) in names and match.group(1) not in comments:
            text = trailing.get(number) if not stripped.startswith("#") and number in trailing else None
            comments[match.group(1)] = text or " ".join(above)
        above = []
    return {k: v for k, v in comments.items() if v}


def _scalar(value: Any) -> str:
    """One value as YAML on one line (lists in flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[:-3].strip() if text.endswith("...") else text


def _lines(section: Any, tree: dict, indent: int) -> list[str]:
    hints = typing.get_type_hints(type(section))
    comments = field_comments(type(section))
    pad, out = "  " * indent, []
    for f in dataclasses.fields(section):
        if f.name not in tree:
            continue  # a section the run does not use
        value, comment = getattr(section, f.name), comments.get(f.name, "")
        if dataclasses.is_dataclass(value):
            out.append(f"{pad}{f.name}:" + (f"  # {comment}" if comment else ""))
            out += _lines(value, tree[f.name], indent + 1)
            continue
        default = _default(f)
        note = f"{_type_name(hints[f.name])}, default {_scalar(to_plain(default))}"
        out.append(f"{pad}{f.name}: {_scalar(tree[f.name])}  # {note}" + (f"; {comment}" if comment else ""))
    return out


def to_plain(value: Any) -> Any:
    return [to_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def commented_config(cfg: Config, tree: dict, section: str | None = None) -> str:
    """``tree`` (the run's settings, :func:`dr_fdsl.config.used_settings`) as YAML with each key's type, default
    and comment; ``section`` (``train``, ``bank.ifs3d``, ...) prints that section only. Loading the text gives the
    same settings (the notes are YAML comments)."""
    node, value, path = tree, cfg, []
    for part in (section.split(".") if section else []):
        if not isinstance(node, dict) or part not in node or not dataclasses.is_dataclass(getattr(value, part)):
            hint = ("not used by this run" if section and section.split(".")[0] in to_dict(cfg)
                    and not section_used(cfg, section.split(".")[0]) else "not a section of this run's config")
            raise ConfigError(f"--print-config {section}: {hint}; sections: {', '.join(tree)}")
        node, value, path = node[part], getattr(value, part), [*path, part]
    body = _lines(value, node, len(path))
    head = [f"{'  ' * i}{p}:" for i, p in enumerate(path)]
    return "\n".join(head + body) + "\n"
