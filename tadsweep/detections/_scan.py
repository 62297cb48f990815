"""Compiled scanner of detection files in ``formats.dump``'s layout (see formats._columnar).

Imported only by the reader: it needs numba, which the OpenTAD image may lack."""

from __future__ import annotations

import numba
import numpy as np

_HEAD = np.frombuffer(b'{"results":{', np.uint8)
_ENTRY = np.frombuffer(b'{"segment":[', np.uint8)
_MID = np.frombuffer(b'],"label":"', np.uint8)
_END = np.frombuffer(b'","score":', np.uint8)
_POW10 = 10.0 ** np.arange(16)  # exact doubles
_QUOTE, _BACKSLASH, _COMMA, _OPEN, _CLOSE = 34, 92, 44, 91, 93  # " \ , [ ]
_LBRACE, _RBRACE, _COLON, _DOT, _ZERO, _NINE = 123, 125, 58, 46, 48, 57


@numba.njit(cache=True, nogil=True, inline="always")
def _literal(b, i, lit):
    """Position after ``lit`` at ``i``, or -1."""
    for k in range(len(lit)):
        if b[i + k] != lit[k]:
            return -1
    return i + len(lit)


@numba.njit(cache=True, nogil=True, inline="always")
def _string_end(b, i):
    """Position of the closing quote of a string whose text starts at ``i``, or -1 at a
    backslash or control character (NUL, hence the padding, among them)."""
    while b[i] != _QUOTE:
        if b[i] == _BACKSLASH or b[i] < 32:
            return -1
        i += 1
    return i


@numba.njit(cache=True, nogil=True, inline="always")
def _number(b, i):
    """``(value, position after)`` of a plain JSON number ``(0|[1-9][0-9]*)(\\.[0-9]+)?`` of at
    most 15 digits at ``i`` (exact: mantissa and power of ten are exact doubles, so the one
    division rounds correctly, as float() does), or ``(0.0, -1)``."""
    mant, digits, frac = 0, 0, 0
    if b[i] == _ZERO:
        i += 1
        digits = 1
    else:
        while _ZERO <= b[i] <= _NINE:
            mant = mant * 10 + (b[i] - _ZERO)
            digits += 1
            i += 1
        if digits == 0:
            return 0.0, -1
    if b[i] == _DOT:
        i += 1
        while _ZERO <= b[i] <= _NINE:
            mant = mant * 10 + (b[i] - _ZERO)
            digits += 1
            frac += 1
            i += 1
        if frac == 0:
            return 0.0, -1
    if digits > 15:
        return 0.0, -1
    return mant / _POW10[frac], i


@numba.njit(cache=True, nogil=True)
def scan(b, n, start, end, score, label, max_labels):
    """Parse ``b[:n]`` (zero-padded after ``n``) into the given arrays; returns ``(entries,
    label spans, video spans, entries per video)`` or None if the text is not in the layout.
    Labels are numbered in order of first appearance (an open-addressing table on a hash)."""
    size = 4 * max_labels
    table = np.full(size, -1, np.int64)
    lab_lo = np.empty(max_labels, np.int64)
    lab_hi = np.empty(max_labels, np.int64)
    n_labels = 0
    label_spans = [(0, 0)]
    video_spans = [(0, 0)]
    counts = [0]
    label_spans.pop()
    video_spans.pop()
    counts.pop()
    k = 0
    i = _literal(b, 0, _HEAD)
    if i < 0:
        return None
    if b[i] == _RBRACE:
        i += 1
    else:
        while True:  # videos
            if b[i] != _QUOTE:
                return None
            name_hi = _string_end(b, i + 1)
            if name_hi < 0 or b[name_hi + 1] != _COLON or b[name_hi + 2] != _OPEN:
                return None
            video_spans.append((i + 1, name_hi))
            i = name_hi + 3
            first = k
            if b[i] == _CLOSE:
                i += 1
            else:
                while True:  # entries
                    if k >= len(start):
                        return None
                    i = _literal(b, i, _ENTRY)
                    if i < 0:
                        return None
                    start[k], i = _number(b, i)
                    if i < 0 or b[i] != _COMMA:
                        return None
                    end[k], i = _number(b, i + 1)
                    if i < 0:
                        return None
                    i = _literal(b, i, _MID)
                    if i < 0:
                        return None
                    lo = i
                    i = _string_end(b, i)
                    if i < 0:
                        return None
                    h = np.uint64(14695981039346656037)  # FNV-1a
                    for q in range(lo, i):
                        h = (h ^ np.uint64(b[q])) * np.uint64(1099511628211)
                    slot = np.int64(h % np.uint64(size))
                    while True:
                        idx = table[slot]
                        if idx < 0:
                            if n_labels >= max_labels:
                                return None
                            table[slot] = n_labels
                            lab_lo[n_labels], lab_hi[n_labels] = lo, i
                            label_spans.append((lo, i))
                            idx = n_labels
                            n_labels += 1
                            break
                        length = lab_hi[idx] - lab_lo[idx]
                        if length == i - lo:
                            same = True
                            for q in range(length):
                                if b[lab_lo[idx] + q] != b[lo + q]:
                                    same = False
                                    break
                            if same:
                                break
                        slot = (slot + 1) % size
                    label[k] = idx
                    i = _literal(b, i, _END)
                    if i < 0:
                        return None
                    score[k], i = _number(b, i)
                    if i < 0 or b[i] != _RBRACE:
                        return None
                    k += 1
                    i += 1
                    if b[i] == _COMMA:
                        i += 1
                    elif b[i] == _CLOSE:
                        i += 1
                        break
                    else:
                        return None
            counts.append(k - first)
            if b[i] == _COMMA:
                i += 1
            elif b[i] == _RBRACE:
                i += 1
                break
            else:
                return None
    if b[i] != _RBRACE or i + 1 != n:
        return None
    return k, label_spans, video_spans, counts
