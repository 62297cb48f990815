// Detection files in formats.dump's exact layout, read and written without a Python object per
// entry (formats.py: _columnar, _dumps_columnar). The reader takes only that layout, with numbers
// it converts exactly; anything else is None, and formats' dict path reads the file or names the
// problem.
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "_buffers.h"

namespace {

const double kPow10[16] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                           1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};  // exact doubles

struct Cursor {
    const unsigned char* b;
    int64_t n, i = 0;
    unsigned char at() const { return i < n ? b[i] : 0; }  // 0 past the end: never matches
    bool literal(std::string_view lit) {
        const int64_t size = lit.size();
        if (n - i < size || std::string_view(reinterpret_cast<const char*>(b + i), size) != lit)
            return false;
        i += size;
        return true;
    }
    // The text of a string whose opening quote was read; false at a backslash or a control
    // character (escapes and raw control characters go to the dict path).
    bool string(int64_t* lo, int64_t* hi) {
        *lo = i;
        while (at() != '"') {
            if (at() == '\\' || at() < 32) return false;
            i++;
        }
        *hi = i++;
        return true;
    }
    // A plain JSON number (0|[1-9][0-9]*)(\.[0-9]+)? of at most 15 digits: exact, as mantissa
    // and power of ten are exact doubles and the one division rounds correctly, as float() does.
    bool number(double* out) {
        int64_t mant = 0;
        int digits = 0, frac = 0;
        if (at() == '0') {
            i++;
            digits = 1;
        } else {
            while (at() >= '0' && at() <= '9' && digits < 16)
                mant = mant * 10 + (b[i++] - '0'), digits++;
            if (digits == 0) return false;
        }
        if (at() == '.') {
            i++;
            while (at() >= '0' && at() <= '9' && digits < 16)
                mant = mant * 10 + (b[i++] - '0'), digits++, frac++;
            if (frac == 0) return false;
        }
        if (digits > 15 || (at() >= '0' && at() <= '9')) return false;
        *out = static_cast<double>(mant) / kPow10[frac];
        return true;
    }
};

PyObject* decode(const unsigned char* b, int64_t lo, int64_t hi) {
    return PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(b + lo), hi - lo, "strict");
}

// scan(raw, start, end, score, label) -> (entries, videos, labels, counts) or None: `raw` in
// dump's layout parsed into the float64 start/end/score and int32 label arrays (capacity: their
// length); labels numbered in order of first appearance; videos and labels as str (None if not
// UTF-8), counts the entries per video.
PyObject* scan(PyObject*, PyObject* args) {
    Buffer raw, start_b, end_b, score_b, label_b;
    if (!PyArg_ParseTuple(args, "y*w*w*w*w*", &raw.view, &start_b.view, &end_b.view,
                          &score_b.view, &label_b.view))
        return nullptr;
    Cursor c{raw.as<unsigned char>(), raw.view.len};
    double *start = start_b.as<double>(), *end = end_b.as<double>();
    double* score = score_b.as<double>();
    int32_t* label = label_b.as<int32_t>();
    const int64_t capacity = start_b.size<double>();
    std::unordered_map<std::string_view, int32_t> label_ids;
    std::vector<std::pair<int64_t, int64_t>> label_spans, video_spans;
    std::vector<int64_t> counts;
    int64_t k = 0;
    bool ok = true;
    Py_BEGIN_ALLOW_THREADS;
    ok = c.literal("{\"results\":{");
    if (ok && c.at() == '}') {
        c.i++;
    } else {
        while (ok) {  // videos
            int64_t lo, hi;
            ok = c.literal("\"") && c.string(&lo, &hi) && c.literal(":[");
            if (!ok) break;
            video_spans.emplace_back(lo, hi);
            const int64_t first = k;
            if (c.at() == ']') {
                c.i++;
            } else {
                while (ok) {  // entries
                    ok = k < capacity && c.literal("{\"segment\":[") && c.number(start + k) &&
                         c.literal(",") && c.number(end + k) && c.literal("],\"label\":\"") &&
                         c.string(&lo, &hi);
                    if (!ok) break;
                    std::string_view name(reinterpret_cast<const char*>(c.b + lo), hi - lo);
                    auto [it, added] = label_ids.emplace(name, int32_t(label_spans.size()));
                    if (added) label_spans.emplace_back(lo, hi);
                    label[k] = it->second;
                    ok = c.literal(",\"score\":") && c.number(score + k) && c.literal("}");
                    if (!ok) break;
                    k++;
                    if (c.at() == ',') {
                        c.i++;
                    } else {
                        ok = c.literal("]");
                        break;
                    }
                }
            }
            counts.push_back(k - first);
            if (!ok) break;
            if (c.at() == ',') {
                c.i++;
            } else {
                ok = c.literal("}");
                break;
            }
        }
    }
    ok = ok && c.literal("}") && c.i == c.n;
    Py_END_ALLOW_THREADS;
    if (!ok) Py_RETURN_NONE;
    PyObject* videos = PyList_New(video_spans.size());
    PyObject* labels = PyList_New(label_spans.size());
    PyObject* per_video = PyList_New(counts.size());
    PyObject* result = nullptr;
    if (videos && labels && per_video) {
        bool utf8 = true;
        for (size_t q = 0; q < video_spans.size() && utf8; q++) {
            PyObject* s = decode(c.b, video_spans[q].first, video_spans[q].second);
            utf8 = s != nullptr;
            if (utf8) PyList_SET_ITEM(videos, q, s);
        }
        for (size_t q = 0; q < label_spans.size() && utf8; q++) {
            PyObject* s = decode(c.b, label_spans[q].first, label_spans[q].second);
            utf8 = s != nullptr;
            if (utf8) PyList_SET_ITEM(labels, q, s);
        }
        for (size_t q = 0; q < counts.size() && utf8; q++)
            PyList_SET_ITEM(per_video, q, PyLong_FromLongLong(counts[q]));
        if (utf8) {
            result = Py_BuildValue("(LOOO)", static_cast<long long>(k), videos, labels, per_video);
        } else if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            Py_INCREF(Py_None);
            result = Py_None;
        }
    }
    Py_XDECREF(videos);
    Py_XDECREF(labels);
    Py_XDECREF(per_video);
    return result;
}

// Python's repr of a double (float_repr_style "short"), as json.dumps writes it: the shortest
// digits that read back as the same double (std::to_chars), then repr's layout -- an exponent
// below 1e-4 and from 1e16 on, else plain digits, ".0" after an integer; NaN, Infinity and
// -Infinity for the values that are not finite.
void put_number(std::string& out, double x) {
    if (std::isnan(x)) {
        out += "NaN";
        return;
    }
    if (std::isinf(x)) {
        out += x > 0 ? "Infinity" : "-Infinity";
        return;
    }
    char buf[40];
    const char* end = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific).ptr;
    const char* p = buf;  // [-]d[.ddd]e(+|-)dd[d]
    if (*p == '-') out += *p++;
    char digits[24];
    int n = 0;
    digits[n++] = *p++;
    if (*p == '.')
        for (p++; *p != 'e'; p++) digits[n++] = *p;
    const bool negative = p[1] == '-';
    int exp = 0;
    for (p += 2; p < end; p++) exp = exp * 10 + (*p - '0');
    if (negative) exp = -exp;
    const int point = exp + 1;  // digits before the decimal point
    if (point <= -4 || point > 16) {
        out += digits[0];
        if (n > 1) out.append(".").append(digits + 1, n - 1);
        out += exp < 0 ? "e-" : "e+";
        if (std::abs(exp) < 10) out += '0';
        out += std::to_string(std::abs(exp));
    } else if (point <= 0) {
        out.append("0.").append(-point, '0').append(digits, n);
    } else if (point >= n) {
        out.append(digits, n).append(point - n, '0').append(".0");
    } else {
        out.append(digits, point).append(".").append(digits + point, n - point);
    }
}

// dump(start, end, score, names, label, videos, offsets) -> bytes: json.dumps({"results": ...},
// separators=(",", ":")) of the columns: float64 start, end and score, the JSON text of each
// label name and video name (bytes), the int32 label of each entry and the int64 entry offsets
// of the videos. Writes with the GIL released.
PyObject* dump(PyObject*, PyObject* args) {
    Buffer start_b, end_b, score_b, label_b, offsets_b;
    PyObject *names, *videos;
    if (!PyArg_ParseTuple(args, "y*y*y*O!y*O!y*", &start_b.view, &end_b.view, &score_b.view,
                          &PyList_Type, &names, &label_b.view, &PyList_Type, &videos,
                          &offsets_b.view))
        return nullptr;
    const double *start = start_b.as<double>(), *end = end_b.as<double>();
    const double* score = score_b.as<double>();
    const int32_t* label = label_b.as<int32_t>();
    const int64_t* offsets = offsets_b.as<int64_t>();
    const int64_t n = label_b.size<int32_t>();
    std::vector<std::string_view> name_text, video_text;  // the lists' bytes, held by the caller
    for (auto [list, text] : {std::pair{names, &name_text}, std::pair{videos, &video_text}})
        for (Py_ssize_t q = 0; q < PyList_GET_SIZE(list); q++) {
            PyObject* item = PyList_GET_ITEM(list, q);
            if (!PyBytes_Check(item)) {
                PyErr_SetString(PyExc_TypeError, "dump: names and videos must be bytes");
                return nullptr;
            }
            text->emplace_back(PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item));
        }
    // a mismatch would read out of bounds: refuse it (the wrapper never passes one)
    const int64_t n_videos = video_text.size(), n_names = name_text.size();
    bool ok = start_b.size<double>() == n && end_b.size<double>() == n &&
              score_b.size<double>() == n && offsets_b.size<int64_t>() == n_videos + 1 &&
              offsets[0] == 0 && offsets[n_videos] == n;
    for (int64_t v = 0; v < n_videos && ok; v++) ok = offsets[v] <= offsets[v + 1];
    for (int64_t k = 0; k < n && ok; k++) ok = label[k] >= 0 && label[k] < n_names;
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "dump: columns, offsets and names do not match");
        return nullptr;
    }
    std::string out;
    Py_BEGIN_ALLOW_THREADS;
    out.reserve(64 + 64 * n);
    out += "{\"results\":{";
    for (int64_t v = 0; v < n_videos; v++) {
        if (v) out += ',';
        out += video_text[v];
        out += ":[";
        for (int64_t k = offsets[v]; k < offsets[v + 1]; k++) {
            if (k > offsets[v]) out += ',';
            out += "{\"segment\":[";
            put_number(out, start[k]);
            out += ',';
            put_number(out, end[k]);
            out += "],\"label\":";
            out += name_text[label[k]];
            out += ",\"score\":";
            put_number(out, score[k]);
            out += '}';
        }
        out += ']';
    }
    out += "}}";
    Py_END_ALLOW_THREADS;
    return PyBytes_FromStringAndSize(out.data(), out.size());
}

PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, nullptr},
    {"dump", dump, METH_VARARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_text",
                      "Detection files in dump's layout (see formats.py).", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__text() { return PyModule_Create(&module); }
