// Two steps of evaluate.py's vectorized matching, each a per-prediction loop that numpy could
// only do in many whole-array passes. Same results as those passes by construction (the
// comparisons are the same; see each function).
#include <algorithm>
#include <cmath>
#include <vector>

#include "_buffers.h"

namespace {

// searchsorted_within(values, lo, hi, x, right, out): per query q, lo[q] + searchsorted(
// values[lo[q]:hi[q]], x[q], side) (each window sorted); NaN x: the window's start, as numpy's
// whole-array binary search with the same comparison gave.
PyObject* searchsorted_within(PyObject*, PyObject* args) {
    Buffer values_b, lo_b, hi_b, x_b, out_b;
    int right;
    if (!PyArg_ParseTuple(args, "y*y*y*y*pw*", &values_b.view, &lo_b.view, &hi_b.view, &x_b.view,
                          &right, &out_b.view))
        return nullptr;
    const double *values = values_b.as<double>(), *x = x_b.as<double>();
    const int64_t *lo = lo_b.as<int64_t>(), *hi = hi_b.as<int64_t>();
    int64_t* out = out_b.as<int64_t>();
    Py_BEGIN_ALLOW_THREADS;
    for (int64_t q = 0; q < x_b.size<double>(); q++) {
        const double v = x[q];
        auto left_of = [v, right](double a) { return right ? a <= v : a < v; };
        out[q] = std::partition_point(values + lo[q], values + hi[q], left_of) - values;
    }
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

// rank_within(count, tiou, order, pref): the pairs of each prediction (consecutive, count[p] of
// them) ordered by tIoU descending, NaN last, ties in pair order -- np.lexsort((-tiou, pair))
// for pairs grouped by prediction -- as global positions (`order`) and each pair's rank within
// its prediction (`pref`).
PyObject* rank_within(PyObject*, PyObject* args) {
    Buffer count_b, tiou_b, order_b, pref_b;
    if (!PyArg_ParseTuple(args, "y*y*w*w*", &count_b.view, &tiou_b.view, &order_b.view,
                          &pref_b.view))
        return nullptr;
    const int64_t* count = count_b.as<int64_t>();
    const double* tiou = tiou_b.as<double>();
    int64_t *order = order_b.as<int64_t>(), *pref = pref_b.as<int64_t>();
    Py_BEGIN_ALLOW_THREADS;
    auto before = [tiou](int64_t a, int64_t b) {  // -tiou ascending, NaN last
        const double ka = -tiou[a], kb = -tiou[b];
        return ka < kb || (!std::isnan(ka) && std::isnan(kb));
    };
    int64_t start = 0;
    for (int64_t p = 0; p < count_b.size<int64_t>(); p++) {
        const int64_t n = count[p];
        for (int64_t k = 0; k < n; k++) order[start + k] = start + k;
        if (n > 1) std::stable_sort(order + start, order + start + n, before);
        for (int64_t k = 0; k < n; k++) pref[order[start + k]] = k;
        start += n;
    }
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"searchsorted_within", searchsorted_within, METH_VARARGS, nullptr},
    {"rank_within", rank_within, METH_VARARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_evaluate",
                      "Per-prediction steps of evaluate.py's matching.", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__evaluate() { return PyModule_Create(&module); }
