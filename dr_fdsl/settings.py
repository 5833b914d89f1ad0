"""The ground floor of the configuration: it reads settings and knows no section.

A run's settings are dataclasses, each owned by the part that uses them (a family's in its package, an objective's
next to it; :mod:`dr_fdsl.config` composes them into one ``Config``). Values are resolved in this order (later
wins): dataclass defaults, the YAML file given with ``--config`` (with what it ``include``s), then dotted
command-line overrides such as ``train.max_steps=100 renderer.mode=joint``. Every key and value is checked against
the dataclasses before any work starts: an unknown key, a wrong type or a value outside a ``Literal`` names the key
and the valid choices. :func:`need` is the one shape of every value check. Field metadata (:data:`NOT_CONTENT`,
:func:`chosen_by`) says which fields change what a run generates; :mod:`dr_fdsl.content_key` makes the keys of
banks, static datasets and checkpoints from it (:func:`content_settings` is the legacy record, for files made
before content keys).

This module imports neither torch nor any part of the package but its errors: every part's settings may use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from dr_fdsl.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 scalars where 1.1 surprises: only true/false are booleans (1.1 also reads yes/no/on/off,
    which would turn ``mixed_precision: no`` into False), ``1e-3`` is a float (1.1 needs a dot: ``1.0e-3``), and
    a key given twice in one mapping is an error (1.1 silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base": merged keys may be overridden; SafeLoader's construct_mapping merges them
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ConfigError(f"a key must be a plain value, got {key!r} (line {key_node.start_mark.line + 1})")
            if key in seen:
                raise ConfigError(f"key {key!r} appears twice in one section (lines {seen[key] + 1} and "
                                  f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def _read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)



# Keys of earlier versions and where they live now, so that an old config fails with the fix in the message. The
# part that moved a key adds it here (e.g. dr_fdsl/families/ifs3d/settings.py).
MOVED_KEYS: dict[str, str] = {}

# A field with this metadata does not change what a run generates (points or pixels): optimisation settings,
# cache folders. Every "settings that change the images" key (bank cache key, static dataset check, checkpoint
# fingerprint) leaves it out: dr_fdsl/content_key.py.
NOT_CONTENT = {"content": False}
# Legacy, for reading old files only: the fields added between f6f5a45 and content keys, which files made before
# content keys left out at their default (content_key.legacy_settings). A new option needs no metadata: content keys
# record only values that differ from their defaults.
ADDED = {"omit_default": True}


def chosen_by(key: str) -> dict:
    """Metadata of a section field kept by :func:`content_settings` only when the sibling field ``key`` names it
    (``bank.ifs3d`` only when ``bank.family`` is ``ifs3d``): the settings of parts not chosen change nothing."""
    return {"chosen_by": key}



def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"tuple[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and returns it in that type (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != len(args):
            raise ConfigError(f"config key '{key}': expected a list of {len(args)} ({_type_name(tp)}), "
                              f"got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool or tp is str:
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - a dataclass field with an annotation this module does not know
        raise TypeError(f"config key '{key}' has an unsupported annotation {tp!r}")
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Builds dataclass ``cls`` from a nested mapping, checking every key and type."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            if f"{prefix}{key}" in MOVED_KEYS:  # a config (or run folder) from an earlier version
                hint = f" (it moved to '{MOVED_KEYS[prefix + str(key)]}')"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}; valid keys"
                              f"{' in ' + repr(prefix.rstrip('.')) if prefix else ''}: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value if value is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, f"{prefix}{name}")
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        if node.get(part) is None:  # absent, or a section left empty in the file
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise ConfigError(f"config override '{dotted}': '{part}' is a value, not a section")
        node = child
    node[leaf] = value


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """Parses ``key.sub=value`` strings; values are read as YAML (``3`` is an int, ``[1, 2]`` a list)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"config override {item!r} must look like 'section.key=value'")
        try:
            value = _read_yaml(raw) if raw != "" else ""
        except (yaml.YAMLError, ConfigError) as err:
            raise ConfigError(f"config override {item!r}: value is not valid YAML ({_one_line(err)})") from err
        parsed.append((key.strip(), value))
    return parsed


def _merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``, section by section."""
    out = dict(base)
    for key, value in top.items():
        if value is None and isinstance(out.get(key), dict):
            continue  # a section left empty (all keys commented out) changes nothing
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _one_line(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message (with a caret drawing) as one line: the problem, where, and its context."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return " ".join(str(err).split())
    mark = err.problem_mark
    context = f" ({err.context})" if err.context else ""
    return f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}{context}"


def _read_text(path: Path) -> str:
    """A config file's text: UTF-8 (YAML's encoding; a leading byte-order mark is allowed) whatever the locale.

    Raises ``ConfigError`` naming the file for a file that cannot be read or is not UTF-8 (with the line and
    byte of the first undecodable byte), never ``UnicodeDecodeError`` or ``OSError``.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file '{path}' cannot be read ({err.strerror or err}); check its permissions") \
            from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"config file '{path}' is not UTF-8 text: byte {data[err.start]:#04x} on line {line} "
                          f"cannot be decoded; save the file as UTF-8") from None


def _read_file(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A config file's mapping, with ``include: other.yaml`` (relative to the file; or a list, merged in order)
    read first and merged under it: shared recipes live in one file and variants state only what differs."""
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a folder, not a YAML file; the shipped ones are in configs/")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; the shipped ones are in configs/")
    if path.resolve() in chain:
        raise ConfigError(f"config file '{path}' includes itself (through {' -> '.join(map(str, chain))})")
    text = _read_text(path)  # its errors name the file already
    try:
        tree = _read_yaml(text)
    except ConfigError as err:
        raise ConfigError(f"config file '{path}': {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {_one_line(err)}") from err
    if tree is None:
        # An empty file would silently run the dataclass defaults (a 1,000-category ViT-Tiny run).
        raise ConfigError(f"config file '{path}' is empty; give at least one section (see configs/)")
    if not isinstance(tree, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(tree).__name__}")
    include = tree.pop("include", None)
    if include is None:
        return tree
    # One file, or a list merged in order (a recipe, then fragments such as configs/image_aug/contest.yaml).
    files = [include] if isinstance(include, str) else include
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"config file '{path}': 'include' must name a YAML file or a list of them, got "
                          f"{include!r}")
    base: dict = {}
    for name in files:
        base = _merge(base, _read_file(path.parent / name, (*chain, path.resolve())))
    return _merge(base, tree)



def load_config(path: str | Path | None, overrides: Sequence[str] = (), cls: type | None = None,
                validate: bool = True) -> Any:
    """Defaults of dataclass ``cls``, then the YAML file at ``path`` (and what it includes), then dotted
    ``overrides``; with ``validate``, ``cls.validate()`` (when it has one) runs before returning."""
    tree = _read_file(Path(path)) if path is not None else {}
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value)
    cfg = from_dict(cls, tree)
    if validate and hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict:
    """The config as plain YAML-friendly types (tuples become lists)."""

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return plain(dataclasses.asdict(cfg))


def used_by(key: str) -> dict:
    """Metadata of a part's own top-level section (``mim``, ``match``): used only when config key ``key``
    (``train.objective``, ``renderer.mode``; its value "+"-joined for objectives) names the part."""
    return {"used_by": key}


def section_used(cfg: Any, name: str) -> bool:
    """Whether ``cfg`` uses its section ``name``: a section marked :func:`used_by` only when its part is chosen
    (``mim`` for ``train.objective: classify+mim``); every other section always."""
    f = next(f for f in dataclasses.fields(cfg) if f.name == name)
    chooser = f.metadata.get("used_by")
    if chooser is None:
        return True
    part, key = chooser.split(".")
    return name in str(getattr(getattr(cfg, part), key)).split("+")


def used_settings(cfg: Any) -> dict:
    """``to_dict(cfg)`` without what the run does not use: sections marked :func:`used_by` whose part is not
    chosen, and sections marked :func:`chosen_by` other than the chosen one (the bank's other families), at any
    depth. Loading it gives ``cfg`` with those at their defaults, which change nothing the run does (no key reads
    them)."""

    def prune(section: Any, tree: dict) -> dict:
        for f in dataclasses.fields(section):
            chooser = f.metadata.get("chosen_by")
            if ("used_by" in f.metadata and not section_used(section, f.name)) or \
                    (chooser and f.name != getattr(section, chooser, None)):
                del tree[f.name]
            elif dataclasses.is_dataclass(getattr(section, f.name)):
                prune(getattr(section, f.name), tree[f.name])
        return tree

    return prune(cfg, to_dict(cfg))


def config_text(cfg: Any) -> str:
    """The resolved config as YAML, as ``save_config`` writes it (and a run's log.txt shows it): only what the run
    uses (:func:`used_settings`)."""
    return yaml.safe_dump(used_settings(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Writes the resolved config as YAML, only what the run uses; ``load_config(path)`` reproduces ``cfg`` (the
    sections left out at their defaults, which the run does not read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_text(cfg))
    return path


def add_config_args(parser) -> None:
    """Adds the shared ``--config FILE`` option and ``key=value`` overrides to an argparse parser. Parse with
    ``parse_intermixed_args``, so that overrides may stand before and after other options (``k=v --resume X k2=v``)."""
    parser.add_argument("--config", type=str, default=None, help="YAML file under configs/")
    parser.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. train.max_steps=100")



def content_settings(section: Any) -> dict:
    """Legacy: the record that files made before content keys hold of a section (its content fields, those marked
    :data:`ADDED` left out at their default; of sections marked :func:`chosen_by` only the chosen one). Only for
    reading such files (``content_key.legacy_settings`` is the rule they are compared by); the keys of new files:
    :mod:`dr_fdsl.content_key`.
    """
    out = {}
    for f in dataclasses.fields(section):
        if f.metadata.get("content", True) is False:
            continue
        chooser = f.metadata.get("chosen_by")
        if chooser and f.name != getattr(section, chooser, None):
            continue
        if f.metadata.get("omit_default") and getattr(section, f.name) == _default(f):
            continue
        if "content_as" in f.metadata:  # a choice among exact equivalents: recorded as the one keys always held
            out[f.name] = f.metadata["content_as"]
            continue
        out[f.name] = _plain(getattr(section, f.name))
    return out


def _default(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one for a ``default_factory`` section)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return content_settings(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def need(ok: bool, key: str, what: str) -> None:
    """Raises ``ConfigError("config key 'key': what")`` unless ``ok``: the one shape of every config check."""
    if not ok:
        raise ConfigError(f"config key '{key}': {what}")


def finite(value: float) -> bool:
    return math.isfinite(value)



def compose(name: str, base: type, sections: Sequence[tuple[str, type] | tuple[str, type, Mapping[str, Any]]], *,
            module: str, doc: str, metadata: Mapping[str, Any] | None = None) -> type:
    """A dataclass ``name``: the fields of dataclass ``base``, then one field per ``(key, dataclass)`` of
    ``sections``, in that order, each defaulting to the section's defaults (with ``metadata``, e.g.
    :func:`chosen_by`; a third item of an entry: that section's own metadata, e.g. :func:`used_by`). How ``Config``
    and ``BankConfig`` take the sections of the registered parts: a part's section is declared once, by the part.
    A key given twice is a programming error (two parts would own one section)."""
    keys = [f.name for f in dataclasses.fields(base)]
    for key, *_ in sections:
        if key in keys:
            raise ValueError(f"section {key!r} of {name} is declared twice")
        keys.append(key)
    fields = [(key, section, dataclasses.field(default_factory=section,
                                               metadata={**(metadata or {}), **(own[0] if own else {})}))
              for key, section, *own in sections]
    cls = dataclasses.make_dataclass(name, fields, bases=(base,))
    cls.__module__, cls.__qualname__, cls.__doc__ = module, name, doc  # pickled and documented as a class there
    return cls
