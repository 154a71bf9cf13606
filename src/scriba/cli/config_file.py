"""YAML experiment files (``ketos --config experiment.yml <cmd>``).

Global keys sit at the top level, subcommand options in a section named after the subcommand, keyed by the
Python parameter names of the options. Values are checked here, against the options' own click types, so a
mistake names the key and the file rather than an option the user never typed. Precedence: command line >
file > built-in defaults; the file only fills options whose value came from a default.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any

import click
import yaml

from scriba.errors import UsageError

log = logging.getLogger(__name__)

_GLOBAL_ALIASES = {"workers": "num_workers", "threads": "num_threads"}
_NOT_SETTABLE = {"config_file", "help", "version"}


def load_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fp:
            raw = fp.read()
    except FileNotFoundError:
        raise UsageError("experiment file not found", path=path) from None
    except OSError as e:
        raise UsageError(f"cannot read experiment file ({e.strerror})", path=path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        where = f"line {line}"
        raise UsageError(f"experiment file is not UTF-8 text (byte {e.start})", path=path, element=where) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(f"not valid YAML: {problem}", path=path, element=at) from None
    except RecursionError:
        raise UsageError("not valid YAML: nested too deeply", path=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError("an experiment file must be a mapping of option names to values", path=path)
    _check_strings(data, path)
    return data


def _check_strings(value: Any, path: str, seen: set[int] | None = None) -> None:
    """Refuses ``"\\ud800"`` escapes: YAML decodes them to lone surrogates, which no file name or text can hold."""
    seen = set() if seen is None else seen
    if isinstance(value, str):
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            shown = value.encode("utf-8", "backslashreplace").decode()
            raise UsageError(f"{shown!r} holds a lone surrogate", path=path)
    elif isinstance(value, (dict, list)) and id(value) not in seen:
        seen.add(id(value))  # anchors can make a list hold itself
        items = [x for kv in value.items() for x in kv] if isinstance(value, dict) else value
        for v in items:
            _check_strings(v, path, seen)


def apply_experiment_file(ctx: click.Context, path: str, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``path`` into the group's parsed ``values`` and the subcommands' defaults (``ctx.default_map``)."""
    data = load_yaml(path)
    group = ctx.command
    assert isinstance(group, click.Group)
    global_params = {p.name: p for p in group.params if p.name not in _NOT_SETTABLE}
    base = Path(path).resolve().parent
    default_map: dict[str, dict[str, Any]] = {}
    values = dict(values)
    for key, value in data.items():
        key = str(key)
        name = _GLOBAL_ALIASES.get(key, key)
        if key in group.commands:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise UsageError(f"section '{key}' must be a mapping of option names to values", path=path)
            default_map[key] = _section(group.commands[key], key, value, path, base, ctx)
        elif name in global_params:
            if value is None:  # `key: null` (or a key without a value) leaves the default
                continue
            if ctx.get_parameter_source(name) in (click.core.ParameterSource.DEFAULT, None):
                values[name] = _convert(global_params[name], value, path, key, base, ctx)
        else:
            _warn_unknown(key, [*global_params, *group.commands], path, None)
    ctx.default_map = default_map
    return values


def _section(cmd: click.Command, section: str, entries: dict, path: str, base: Path, ctx: click.Context) -> dict:
    params = {p.name: p for p in cmd.params if p.name not in _NOT_SETTABLE}
    out: dict[str, Any] = {}
    for key, value in entries.items():
        key = str(key)
        if key not in params:
            _warn_unknown(key, list(params), path, section)
            continue
        if value is None:  # `key: null` (or a key without a value) leaves the default
            continue
        out[key] = _convert(params[key], value, path, f"{section}.{key}", base, ctx)
    return out


def _warn_unknown(key: str, valid: list[str], path: str, section: str | None) -> None:
    where = f"section '{section}' of {path}" if section else path
    match = difflib.get_close_matches(key, valid, n=1)
    hint = f' Did you mean "{match[0]}"?' if match else ""
    log.warning('ignoring unknown key "%s" in %s.%s', key, where, hint)


def _convert(param: click.Parameter, value: Any, path: str, key: str, base: Path, ctx: click.Context) -> Any:
    if value is None:
        return None
    many = getattr(param, "multiple", False) or param.nargs == -1
    if many:
        items = value if isinstance(value, list) else [value]
        return [_convert_one(param, v, path, key, base, ctx) for v in items]
    if isinstance(value, list):
        raise UsageError(f"'{key}' takes a single value, not a list", path=path)
    return _convert_one(param, value, path, key, base, ctx)


def _convert_one(param: click.Parameter, value: Any, path: str, key: str, base: Path, ctx: click.Context) -> Any:
    if param.type is click.UNPROCESSED:
        return value
    if isinstance(param.type, click.Path) and isinstance(value, str) and not os.path.isabs(value):
        # Paths are relative to where ketos runs; fall back to the experiment file's folder.
        if not os.path.exists(value) and (base / value).exists():
            value = str(base / value)
    if isinstance(value, (dict, list)):
        raise UsageError(f"'{key}' expects {param.type.name}, got a {type(value).__name__}", path=path)
    problem = _type_mismatch(param.type, value)
    if problem:
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        raise UsageError(f"invalid value for '{key}': {shown} {problem}", path=path)
    try:
        return param.type.convert(value, param, ctx)
    except click.BadParameter as e:
        raise UsageError(f"invalid value for '{key}': {e.message}", path=path) from None


def _type_mismatch(kind: click.ParamType, value: Any) -> str | None:
    """Why a YAML value does not fit an option's type; None if it does.

    click converts whatever it is given (``int(1.5)`` is 1, ``int(True)`` is 1, ``float(True)`` is 1.0): a value
    of the wrong YAML type is refused here instead of silently becoming another number.
    """
    if isinstance(kind, click.types.BoolParamType):
        return None if isinstance(value, (bool, str)) else "is not true or false"
    if isinstance(value, bool):
        if isinstance(kind, click.types.IntParamType):
            return "is not a whole number"
        return "is not a number" if isinstance(kind, click.types.FloatParamType) else "is not text"
    if isinstance(kind, click.types.IntParamType) and isinstance(value, float) and not value.is_integer():
        return "is not a whole number"
    if isinstance(kind, click.Path) and not isinstance(value, str):
        return "is not a path"
    return None
