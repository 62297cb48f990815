"""The one way tadsweep reads a YAML or JSON file a user controls (configs, settings, grids, run
state, detections): UTF-8 required, duplicate keys refused, size, nesting and YAML alias expansion
capped. Every problem is one InputError line naming the file (and the line or key)."""

from __future__ import annotations

import json
import math
import os
import zlib

import yaml

from tadsweep.errors import InputError

MAX_DEPTH = 64  # no tadsweep file nests deeper than about 6
MAX_NODES = 200_000  # values after YAML aliases expand (a config has a few hundred)
MAX_YAML_BYTES = 1 << 20  # a study config is a few kB
MAX_JSON_BYTES = 1 << 26  # settings, grids, run state; detection files pass their own cap
MAX_DETECTIONS_BYTES = 1 << 33  # decompressed: THUMOS-sized candidates are a few hundred MB


def _decode(path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None


def _read_bytes(path, max_bytes: int) -> bytes:
    """The file's bytes (gunzipped when gzip), refusing more than max_bytes either way."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if raw[:2] == _GZIP_MAGIC:
        raw = _gunzip(path, raw, max_bytes)
    if len(raw) > max_bytes:
        raise InputError(f"{path}: larger than {max_bytes} bytes; not a file tadsweep reads")
    return raw


_GZIP_MAGIC = b"\x1f\x8b"


def _gunzip(path, raw: bytes, max_bytes: int) -> bytes:
    """Every gzip member of ``raw`` (as gzip.GzipFile reads them), at most max_bytes + 1 bytes
    decompressed: a gzip bomb stops at the cap. isal's inflate where installed (the same bytes
    out, twice as fast: 50 MB of candidates in 0.06 instead of 0.13 s), else zlib's."""
    try:
        from isal import isal_zlib as z
    except ImportError:  # the OpenTAD image
        z = zlib
    parts, size = [], 0
    while raw and size <= max_bytes:
        if raw[:2] != _GZIP_MAGIC:
            raise InputError(f"{path}: truncated or corrupt gzip data (not a gzip member)")
        inflate = z.decompressobj(31)  # gzip wrapper: header and CRC checked
        try:
            parts.append(inflate.decompress(raw, max_bytes + 1 - size))
        except z.error as exc:
            raise InputError(f"{path}: truncated or corrupt gzip data ({exc})") from None
        size += len(parts[-1])
        if not inflate.eof and size <= max_bytes:
            raise InputError(f"{path}: truncated or corrupt gzip data (it ends too early)")
        raw = inflate.unused_data
    return b"".join(parts)


def check_shape(data, source: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES):
    """Refuse nesting deeper than max_depth and more than max_nodes values, counting a shared
    (aliased) value at every place it appears: a YAML "billion laughs" stops here, early."""
    stack, nodes = [(data, 0)], 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise InputError(
                f"{source}: more than {max_nodes} values (YAML aliases expanding?); refused"
            )
        if depth > max_depth:
            raise InputError(f"{source}: nested deeper than {max_depth} levels; refused")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _unique_keys(source):
    def hook(pairs):
        out = dict(pairs)
        if len(out) != len(pairs):
            seen = set()
            for key, _ in pairs:
                if key in seen:
                    raise InputError(f"{source}: duplicate key {json.dumps(key)[:80]}")
                seen.add(key)
        return out

    return hook


def read_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES, shape: bool = True):
    """Parse a plain or gzip JSON file. shape=False skips the nesting walk (for detection files,
    whose loaders check every entry's structure themselves)."""
    text = _decode(path, _read_bytes(path, max_bytes))
    if not text.strip():
        raise InputError(f"{path}: empty file")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys(path))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: invalid JSON (truncated or corrupt?): {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None
    except RecursionError:
        raise InputError(f"{path}: nested deeper than {MAX_DEPTH} levels; refused") from None
    if shape:
        check_shape(data, str(path))
    return data


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` keys may be overridden, as YAML intends
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first given on line {first + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | os.PathLike, max_bytes: int = MAX_YAML_BYTES):
    """Parse a YAML file safely (see the module's docstring)."""
    text = _decode(path, _read_bytes(path, max_bytes))
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}:{where} invalid YAML: {problem}") from None
    except RecursionError:
        raise InputError(f"{path}: nested deeper than {MAX_DEPTH} levels; refused") from None
    check_shape(data, str(path))
    return data


def finite_problem(data, max_int: int = 2**31 - 1) -> tuple[list, str] | None:
    """(key path, problem) of the first number that is NaN, infinite or a larger integer than
    any setting can mean (it would overflow in a wall time or a wildcard), else None."""
    stack = [([], data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            return path, f"{value} is not a finite number"
        if isinstance(value, int) and abs(value) > max_int:
            return path, f"{value} is out of range (at most {max_int})"
        if isinstance(value, dict):
            stack.extend((path + [k], v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((path + [i], v) for i, v in reversed(list(enumerate(value))))
    return None
