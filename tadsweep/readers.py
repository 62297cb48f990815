"""The one way tadsweep reads a YAML or JSON file a user controls: UTF-8, duplicate keys refused,
size, nesting and YAML alias expansion capped (docs/refusals.md). Every problem is one
InputError line naming the file (and the line or key)."""

import gc
import json
import math
import os
import zlib
from contextlib import contextmanager

import yaml

from tadsweep.errors import InputError

MAX_DEPTH = 64  # no tadsweep file nests deeper than about 6
MAX_NODES = 200_000  # values after YAML aliases expand (a config has a few hundred)
MAX_YAML_BYTES = 1 << 20  # a study config is a few kB
MAX_JSON_BYTES = 1 << 26  # settings, grids, run state; detection files pass their own cap
MAX_TSV_BYTES = 1 << 28  # tadsweep's tables (a summary.tsv: runs x settings, a few MB)
# Detections and annotations, decompressed: 4.5x a THUMOS-sized candidates file (56 MB), and
# all a gzip bomb or /dev/zero can make a command hold before it refuses.
MAX_DETECTIONS_BYTES = 256 << 20
CAP_ENV = "TADSWEEP_MAX_DETECTIONS_MB"
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # compressed bytes read at a time
_OUT_CHUNK = 4 << 20  # inflated bytes per step: the buffer never holds a step's output twice


def detections_cap() -> int:
    """The cap of a detection or annotation file, decompressed, in bytes:
    $TADSWEEP_MAX_DETECTIONS_MB (MiB) where set, else MAX_DETECTIONS_BYTES."""
    text = os.environ.get(CAP_ENV, "").strip()
    if not text:
        return MAX_DETECTIONS_BYTES
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 1 << 16):
        raise InputError(f"${CAP_ENV}: {text[:20]!r} is not a whole number of MiB from 1 to 65536")
    return int(text) << 20


def _decode(path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None


def too_large(path, max_bytes: int, env: str | None = None) -> InputError:
    """The refusal of a file past its cap; `env`: the variable that raises the cap."""
    raise_it = f"; ${env}=MiB raises the cap" if env else ""
    return InputError(
        f"{path}: larger than {max_bytes} bytes ({max_bytes / (1 << 20):g} MiB); not a file "
        f"tadsweep reads{raise_it}"
    )


def open_input(path):
    """`path` opened for reading without waiting for a writer: a FIFO nobody writes to reads as
    empty instead of hanging."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_bytes(path, max_bytes: int, env: str | None = None) -> bytes | bytearray:
    """The file's bytes (gunzipped when gzip), refusing more than max_bytes either way."""
    try:
        with open_input(path) as fh:
            head = fh.peek(2)[:2]
            if head == _GZIP_MAGIC:
                return _gunzip(path, fh, fh.read(2), max_bytes, env)
            raw = fh.read(max_bytes + 1)  # one buffer: no copy of a file near the cap
            if len(raw) > max_bytes:
                raise too_large(path, max_bytes, env)
            return raw
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _gunzip(path, fh, pending: bytes, max_bytes: int, env: str | None = None) -> bytearray:
    """Every gzip member (as gzip.GzipFile reads them), inflated a few MiB at a time into one
    buffer of at most max_bytes; isal's inflate where installed (twice as fast), else zlib's."""
    try:
        from isal import isal_zlib as z
    except ImportError:
        z = zlib
    out, inflate = bytearray(), None

    def corrupt(why):
        return InputError(f"{path}: truncated or corrupt gzip data ({why})")

    while True:
        if inflate is None:  # a member starts
            if len(pending) < 2:
                pending += fh.read(_CHUNK)
                if not pending:
                    break
            if pending[:2] != _GZIP_MAGIC:
                raise corrupt("not a gzip member")
            inflate = z.decompressobj(31)  # gzip wrapper: header and CRC checked
        try:
            step = inflate.decompress(pending, min(_OUT_CHUNK, max_bytes + 1 - len(out)))
        except z.error as exc:
            raise corrupt(exc) from None
        out += step
        if len(out) > max_bytes:
            raise too_large(path, max_bytes, env)
        if inflate.eof:
            pending, inflate = inflate.unused_data, None
            continue
        # input held back by the step's limit, else the next chunk; with neither, a step that
        # still gave bytes drains what inflate holds on the next turn
        pending = inflate.unconsumed_tail or fh.read(_CHUNK)
        if not pending and not step:
            raise corrupt("it ends too early")
    return out


@contextmanager
def paused_gc():
    """No cyclic garbage collection inside: parsed JSON holds no cycles, and the collector would
    walk its million objects dozens of times."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _too_deep(source) -> InputError:
    return InputError(f"{source}: nested deeper than {MAX_DEPTH} levels; refused")


def check_shape(data, source: str):
    """Refuse nesting deeper than MAX_DEPTH and more than MAX_NODES values, counting an aliased
    value at every place it appears (a YAML "billion laughs" stops early)."""
    stack, nodes = [(data, 0)], 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise InputError(
                f"{source}: more than {MAX_NODES} values (YAML aliases expanding?); refused"
            )
        if depth > MAX_DEPTH:
            raise _too_deep(source)
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


def read_detections_json(path: str | os.PathLike):
    """A detection or annotation file (JSON, gzip ok), capped at detections_cap(); the loaders
    check every entry, so no nesting walk."""
    return read_json(path, max_bytes=detections_cap(), shape=False, env=CAP_ENV)


def read_json(
    path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES, shape: bool = True, env=None
):
    """Parse a plain or gzip JSON file: orjson where installed, a key given twice refused. A file
    orjson refuses goes to the standard library, which names the problem (or reads NaN, which
    callers refuse by key). shape=False skips the nesting walk; `env` raises max_bytes."""
    raw = _read_bytes(path, max_bytes, env)
    with paused_gc():
        data = _orjson(raw)
        if data is None:
            text = _decode(path, raw)
            if not text.strip():
                raise InputError(f"{path}: empty file")
            try:
                data = json.loads(text, object_pairs_hook=_unique_keys(path))
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path}: invalid JSON (truncated or corrupt?): {exc.msg} at line "
                    f"{exc.lineno} column {exc.colno}"
                ) from None
            except RecursionError:
                raise _too_deep(path) from None
    if shape:
        check_shape(data, str(path))
    return data


def _orjson(raw: bytes):
    """orjson's parse of `raw` when it takes it and no key repeats, else None."""
    try:
        import orjson
    except ImportError:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if _keys_unique(raw, data) else None


def _keys_unique(raw, data) -> bool:
    """Whether no JSON object repeats a key: every "{" outside a string opens an object and every
    ":" follows a key, so equal counts of parsed objects and keys mean none was lost. Objects in
    lists are counted, not entered; any miscount (also "{" or ":" in a string) sends the file to
    the standard library."""
    dicts = keys = 0
    stack = [data]
    while stack:
        x = stack.pop()
        if type(x) is dict:
            dicts += 1
            keys += len(x)
            stack.extend(v for v in x.values() if type(v) in (dict, list))
        elif type(x) is list:
            objects = [v for v in x if type(v) is dict]
            dicts += len(objects)
            keys += sum(map(len, objects))
            stack.extend(v for v in x if type(v) is list)
    return (dicts, keys) == (raw.count(b"{"), raw.count(b":"))


def read_text(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> str:
    """A UTF-8 text file, capped (see _read_bytes)."""
    return _decode(path, _read_bytes(path, max_bytes))


def read_tsv(path: str | os.PathLike, max_bytes: int = MAX_TSV_BYTES, **kwargs):
    """A tab-separated table (pandas.read_csv's keyword arguments), capped; pandas's
    EmptyDataError and ParserError reach the caller, which words them."""
    import io

    import pandas as pd

    raw = _read_bytes(path, max_bytes)
    try:
        return pd.read_csv(io.BytesIO(raw), sep="\t", encoding="utf-8", **kwargs)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); not a table tadsweep wrote"
        ) from None


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


def read_yaml(path: str | os.PathLike):
    """Parse a YAML file safely. A FIFO or a device is refused before it is read (Snakemake,
    reading the config again, would wait or read without end)."""
    if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
        raise InputError(f"{path}: not a regular file (a FIFO, device or socket); name a file")
    text = read_text(path, MAX_YAML_BYTES)
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}:{where} invalid YAML: {problem}") from None
    except RecursionError:
        raise _too_deep(path) from None
    check_shape(data, str(path))
    return data


def finite_problem(data, max_int: int = 2**31 - 1) -> tuple[list, str] | None:
    """(key path, problem) of the first number that is NaN, infinite or an integer past max_int
    (it would overflow in a wall time or a wildcard), else None."""
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
