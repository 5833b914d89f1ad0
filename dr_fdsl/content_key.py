"""Content keys: what a bank cache file, a static dataset and a checkpoint record of the settings that made them.

A content key is ``{"schema": 2, "values": {dotted config key: value}}`` holding only the values that differ from
their defaults. A config section's *content* fields are those that change what is generated (points or pixels):
every field except those marked ``NOT_CONTENT`` (``metadata={"content": False}``: optimisation settings, cache
folders), and of the bank's family sections (``chosen_by("family")``) only the chosen family's.

Because a value at its default is not written, **a new option needs no metadata**: at its default it changes no
key, so every file made before it existed keeps matching; set to another value it changes the key (and a mismatch
names it: :func:`differences`). Two things still change what old keys mean, and ``tests/golden/content_defaults
.json`` refuses them: changing the default of an existing content field (files made under the old default would
match the new one) and renaming a field.

Files made before content keys (no ``"schema"``) recorded whole sections, with the fields marked ``ADDED`` left out
at their default; :func:`legacy_settings` reproduces that record, only for reading such files. It leaves out, at
their default, the fields that did not exist when keys changed (``content_legacy.FIELDS``), so that it keeps
reproducing old records however many options are added.

Plain Python, no torch: cheap to import from the loader and the tools.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from dr_fdsl.content_legacy import FIELDS as LEGACY_FIELDS

SCHEMA = 2  # 2: dotted non-default values; a record without "schema" is the legacy (whole-section) one


def is_content(f: dataclasses.Field, section: Any) -> bool:
    """Whether field ``f`` of ``section`` changes what is generated: not ``NOT_CONTENT``, and not a section marked
    ``chosen_by(key)`` (``metadata={"chosen_by": key}``) other than the one ``section.<key>`` names (the bank's
    family sections: only ``bank.family``'s counts)."""
    if f.metadata.get("content", True) is False:
        return False
    chooser = f.metadata.get("chosen_by")
    return not (chooser and f.name != getattr(section, chooser, None))


def content_value(f: dataclasses.Field, section: Any) -> Any:
    """Field ``f``'s value as keys hold it: ``metadata={"content_as": v}`` marks a choice among exact equivalents
    (``renderer.raster_backend``: every backend gives the same fragments), recorded as ``v`` whatever was chosen."""
    return f.metadata["content_as"] if "content_as" in f.metadata else getattr(section, f.name)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh instance for a ``default_factory`` section); ``MISSING`` when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def plain(value: Any) -> Any:
    """``value`` as JSON types: a section becomes the dict of all its content fields, tuples become lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return settings(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def settings(section: Any) -> dict:
    """Every content field of ``section`` (nested sections as dicts), defaults included: a description of what
    made a file (``PointBank.settings``, a dataset's ``dataset.json``), never compared (compare keys)."""
    return {f.name: plain(content_value(f, section)) for f in dataclasses.fields(section) if is_content(f, section)}


def changed(section: Any, prefix: str, defaults: Any = None) -> dict[str, Any]:
    """The content fields of ``section`` that differ from their defaults, as ``{f"{prefix}.{field}": value}``,
    nested sections flattened (``renderer.view.fov``).

    ``defaults``: the section holding the defaults (e.g. the default-factory instance of the parent's field);
    None: each field's own default.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        if not is_content(f, section) or "content_as" in f.metadata:  # content_as: the same value whatever is chosen
            continue
        value = getattr(section, f.name)
        # a field the defaults' section lacks (a subclass's): its own default
        default = getattr(defaults, f.name) if hasattr(defaults, f.name) else field_default(f)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value) and dataclasses.is_dataclass(default):
            out.update(changed(value, key, default))
        elif default is dataclasses.MISSING or plain(value) != plain(default):
            out[key] = plain(value)
    return out


def value_at(root: Any, dotted: str) -> tuple[Any, Any]:
    """``(value, default)`` of the config key ``dotted`` of ``root`` (a ``Config`` or any section): the default
    is the parent field's default section's, so that a section's own default factory counts."""
    value, default = root, None
    for name in dotted.split("."):
        f = next((f for f in dataclasses.fields(value) if f.name == name), None)
        if f is None:
            raise KeyError(f"no config key '{dotted}' ('{name}' is not a field of {type(value).__name__})")
        default = field_default(f) if default is None else getattr(default, name)
        value = getattr(value, name)
    return value, default


def changed_at(root: Any, dotted: str) -> dict[str, Any]:
    """:func:`changed` for one config key of ``root``: a section gives its changed content fields, a plain value
    itself when it differs from its default (whether or not it is content: the caller chose it)."""
    value, default = value_at(root, dotted)
    if dataclasses.is_dataclass(value):
        return changed(value, dotted, default)
    return {} if plain(value) == plain(default) else {dotted: plain(value)}


def make_key(values: dict[str, Any]) -> dict:
    """The record of ``values`` (dotted key -> non-default value) under the schema version."""
    return {"schema": SCHEMA, "values": dict(sorted(values.items()))}


def key_digest(key: dict) -> str:
    """SHA-256 (hex) of a key as sorted JSON: what a file name holds."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def is_keyed(record: Any) -> bool:
    """Whether ``record`` (a stored key, or a dict holding one) is of the content-key rule (it carries
    ``"schema"``); False: a record of the legacy rule."""
    return isinstance(record, dict) and "schema" in record


def flatten(record: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{dotted key: leaf}`` (a legacy record's sections; a non-dict is one leaf)."""
    if not isinstance(record, dict):
        return {prefix: record}
    out: dict[str, Any] = {}
    for k, v in record.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


# Choices among exact equivalents (``content_as`` fields): files made before content keys recorded them as chosen
# (an export made with raster_backend=sort holds "sort"), and they change no image: never a difference.
EQUIVALENT = ("raster_backend",)


def differences(saved: Any, current: Any, saved_as: str = "file", current_as: str = "config",
                absent: str = "none", prefix: str = "") -> list[str]:
    """One ``"key: <saved_as> A, <current_as> B"`` per dotted key whose values differ, nested dicts flattened
    under ``prefix`` (a legacy record's section: ``"bank"``); ``absent`` stands for a key one side lacks (for
    content keys: ``"default"``)."""
    old, new = flatten(saved, prefix), flatten(current, prefix)
    missing = object()
    out = []
    for k in dict.fromkeys([*old, *new]):
        if k.rsplit(".", 1)[-1] in EQUIVALENT:
            continue
        a, b = old.get(k, missing), new.get(k, missing)
        if a != b:
            show = [absent if v is missing else repr(v) for v in (a, b)]
            out.append(f"{k}: {saved_as} {show[0]}, {current_as} {show[1]}")
    return out


# Defaults that changed after content keys came: files made before them left these keys out at the old default, so
# the legacy record leaves them out at it too (``renderer.color_param`` was ``squash``; now ``auto``, which means
# squash in mode frozen and residual tables where they learn: the checkpoint's required part names those;
# renderer.radius_param did not exist, and the radii were squash).
LEGACY_DEFAULTS = {"renderer.color_param": "squash", "renderer.radius_param": "squash"}


def legacy_settings(section: Any, prefix: str) -> dict:
    """Only for reading files made before content keys: the record the earlier rule wrote for ``section`` (the
    config key ``prefix``: ``"bank"``, ``"renderer"``, ``"match"``...): its content fields as nested dicts, where a
    field marked ``ADDED`` (``metadata={"omit_default": True}``), or one added since (not in
    ``content_legacy.FIELDS``), is left out while it holds its default."""
    out = {}
    for f in dataclasses.fields(section):
        if not is_content(f, section):
            continue
        key, value = f"{prefix}.{f.name}", content_value(f, section)
        added = f.metadata.get("omit_default") or key not in LEGACY_FIELDS
        at_default = value == field_default(f) or (key in LEGACY_DEFAULTS and value == LEGACY_DEFAULTS[key])
        if added and at_default:  # compared as the earlier rule did (a list is not a tuple)
            continue
        out[f.name] = legacy_settings(value, key) if dataclasses.is_dataclass(value) else plain(value)
    return out
