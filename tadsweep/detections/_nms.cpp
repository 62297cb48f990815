// OpenTAD's 1-D NMS kernels, bit-exact (the reasons for each detail: nms.py's docstring).
// Built without -ffast-math and with -ffp-contract=off (setup.py): float32 arithmetic in the
// C++ code's own order, no fused multiply-adds, expf the C library's, as upstream's nms_cpu.cpp.
#include <algorithm>
#include <cmath>
#include <vector>

#include "_buffers.h"

namespace {

const float kEps = 1e-6f;  // upstream's area offset: x2 - x1 + 1e-6
const float kNegInf = -INFINITY;

struct Params {
    int64_t cap;
    int method;
    float thr, sigma, min_score, t1, t2;
};

// The soft-NMS weight of an overlap `ovr` with the selected segment (area `iarea`).
inline float weight(float ovr, float iarea, const Params& p) {
    if (p.method == 0) return ovr >= p.thr ? 0.f : 1.f;
    if (p.method == 1) return ovr >= p.thr ? 1.f - ovr : 1.f;
    if (p.method == 2 || ovr >= p.t1 + p.t2 * iarea) return std::exp(-(ovr * ovr) / p.sigma);
    return 1.f;
}

// upstream's intersection, with std::max/std::min in its argument order (NaN behaves as there),
// and its overlap of segments of areas `iarea` and `area` intersecting by `inter`
inline float intersection(float ix1, float ix2, float x1, float x2) {
    return std::max(0.f, std::min(ix2, x2) - std::max(ix1, x1));
}
inline float overlap(float inter, float iarea, float area) {
    return inter / ((iarea + area) - inter);
}

// upstream's loop as written (every slot, every pass), stopping after `cap` selections: for
// groups the fast kernel does not take. Arrays are the group's own copies.
int64_t soft_nms_plain(float* X1, float* X2, float* SC, int64_t* ID, int64_t n, const Params& p,
                       int64_t* out_id, float* out_sc) {
    std::vector<float> AR(n);
    for (int64_t k = 0; k < n; k++) AR[k] = (X2[k] - X1[k]) + kEps;
    int64_t taken = 0;
    for (int64_t i = 0; i < n && taken < p.cap; i++) {
        int64_t m = i;
        for (int64_t s = i + 1; s < n; s++)
            if (SC[m] < SC[s]) m = s;
        float tx1 = X1[m], tx2 = X2[m], tar = AR[m], tsc = SC[m];
        int64_t tid = ID[m];
        out_id[taken] = tid;
        out_sc[taken] = tsc;
        taken++;
        X1[m] = X1[i], X2[m] = X2[i], AR[m] = AR[i], SC[m] = SC[i], ID[m] = ID[i];
        X1[i] = tx1, X2[i] = tx2, AR[i] = tar, SC[i] = tsc, ID[i] = tid;
        int64_t pos = i + 1;
        while (pos < n) {
            const float ovr = overlap(intersection(tx1, tx2, X1[pos], X2[pos]), tar, AR[pos]);
            SC[pos] *= weight(ovr, tar, p);
            if (SC[pos] < p.min_score) {
                n--;
                X1[pos] = X1[n], X2[pos] = X2[n], AR[pos] = AR[n], SC[pos] = SC[n];
                ID[pos] = ID[n];
            } else {
                pos++;
            }
        }
    }
    return taken;
}

// Whether the C++ maximum scan prefers the first (score, slot) to the second.
inline bool better(float score1, int64_t slot1, float score2, int64_t slot2) {
    return score1 > score2 || (score1 == score2 && slot1 < slot2);
}

const int64_t kBlock = 32;  // segments per block (timings hardly depend on it)

// upstream's soft-NMS of one group of segments of positive length and finite values, without
// visiting every slot on every pass.
//
// Segments are kept in time order (by start) and in blocks of kBlock. Each block knows its best
// live segment (highest score, then lowest slot: the C++ scan's choice) and the latest end of
// its segments. A pass compares block bests, and decays only the segments of the blocks that can
// overlap the selected one: a segment with inter == 0 gets weight exactly 1 (ovr is 0, expf(-0)
// is 1; method 0 with thr <= 0, where it would be 0, goes to soft_nms_plain), and its score,
// checked against min_score on the first pass, is unchanged. Slots are tracked as in C++ (eslot:
// segment -> slot, slot2elem its inverse): the selected segment swaps with slot i, and segments
// removed in a pass are replaced as the C++ loop replaces them (see the removal step).
// (`p` by value: no store through the float arrays can alias it, so it stays in registers.)
int64_t soft_nms_fast(const float* x1, const float* x2, const float* sc, int64_t id0, int64_t n0,
                      const Params p, int64_t* out_id, float* out_sc) {
    std::vector<int64_t> order(n0);
    for (int64_t k = 0; k < n0; k++) order[k] = k;
    std::stable_sort(order.begin(), order.end(),
                     [x1](int64_t a, int64_t b) { return x1[a] < x1[b]; });
    std::vector<float> ex1(n0), ex2(n0), ear(n0), esc(n0);
    std::vector<int64_t> eslot(order), slot2elem(n0);
    for (int64_t k = 0; k < n0; k++) {
        ex1[k] = x1[order[k]];
        ex2[k] = x2[order[k]];
        ear[k] = (ex2[k] - ex1[k]) + kEps;
        esc[k] = sc[order[k]];
        slot2elem[order[k]] = k;
    }
    std::vector<char> alive(n0, 1);
    const int64_t B = kBlock, nb = (n0 + B - 1) / B;
    std::vector<int64_t> bbest(nb, -1), bslot(nb, 0);  // best live segment (-1: none), its slot
    std::vector<float> bscore(nb, kNegInf), bx2max(nb);  // its score; latest end (or later)
    std::vector<char> dirty(nb, 1);                      // best and end need a rescan
    std::vector<int64_t> removed(n0), holes(n0);
    int64_t n = n0;  // live slots are [i, n), as in C++
    int64_t taken = 0, i = 0;
    while (i < n && taken < p.cap) {
        // The maximum: best of the block bests (rescanning blocks whose best may have changed).
        int64_t best = -1, best_slot = 0;
        float best_sc = kNegInf;
        for (int64_t b = 0; b < nb; b++) {
            if (dirty[b]) {
                // the block's best so far in registers (scores are finite: any live one wins
                // over the start)
                int64_t bb = -1, bsl = INT64_MAX;
                float bs = kNegInf, x2m = kNegInf;
                for (int64_t k = b * B; k < std::min(b * B + B, n0); k++) {
                    if (!alive[k]) continue;
                    const float s = esc[k];
                    const int64_t sl = eslot[k];
                    if (better(s, sl, bs, bsl)) bb = k, bs = s, bsl = sl;
                    x2m = std::max(x2m, ex2[k]);
                }
                bbest[b] = bb;
                bscore[b] = bs;
                bslot[b] = bsl;
                bx2max[b] = x2m;
                dirty[b] = 0;
            }
            if (bbest[b] >= 0 && (best < 0 || better(bscore[b], bslot[b], best_sc, best_slot))) {
                best = bbest[b];
                best_sc = bscore[b];
                best_slot = bslot[b];
            }
        }
        const int64_t e = best;
        out_id[taken] = id0 + order[e];
        out_sc[taken] = esc[e];
        taken++;
        alive[e] = 0;
        dirty[e / B] = 1;
        // Swap: the segment in slot i moves to the selected one's slot (a later slot, so it can
        // only lose its block's lead).
        const int64_t f = slot2elem[i];
        if (f != e) {
            const int64_t m = eslot[e];
            slot2elem[m] = f;
            eslot[f] = m;
            if (bbest[f / B] == f) dirty[f / B] = 1;
        }
        const bool first = i == 0;
        i++;
        if (taken == p.cap || i >= n) break;
        // Decay the live segments that overlap the selected one. Blocks are in start order, so
        // the scan stops at the first start >= the selected end.
        const float tx1 = ex1[e], tx2 = ex2[e], tar = ear[e];
        int64_t nrem = 0;
        for (int64_t b = 0; b < nb; b++) {
            const int64_t lo = b * B;
            if (ex1[lo] >= tx2) break;
            if (bx2max[b] <= tx1) continue;
            for (int64_t k = lo; k < std::min(lo + B, n0); k++) {
                if (ex1[k] >= tx2) break;
                if (!alive[k]) continue;
                const float inter = intersection(tx1, tx2, ex1[k], ex2[k]);
                if (!(inter > 0)) continue;
                const float ovr = overlap(inter, tar, ear[k]);
                const float old = esc[k];
                const float now = old * weight(ovr, tar, p);
                esc[k] = now;
                // Keep the block's best current without a rescan where possible.
                if (bbest[b] == k) {
                    if (now < old)
                        dirty[b] = 1;
                    else
                        bscore[b] = now;
                } else if (now > old && !dirty[b] && better(now, eslot[k], bscore[b], bslot[b])) {
                    bbest[b] = k;
                    bscore[b] = now;
                    bslot[b] = eslot[k];
                }
                if (now < p.min_score && !first) removed[nrem++] = k;
            }
        }
        if (first) {
            // The first pass checks every score against min_score (later passes only change,
            // and so only need to check, the decayed ones).
            for (int64_t k = 0; k < n0; k++)
                if (alive[k] && esc[k] < p.min_score) removed[nrem++] = k;
        }
        if (nrem) {
            // The C++ loop, walking slots upwards, overwrites each removed slot with the last
            // live slot (n-1) and re-examines it; removed segments pulled in are overwritten
            // again. Net effect: the removed slots below the new length (holes), lowest first,
            // receive the surviving segments at or above it, highest slot first.
            for (int64_t r = 0; r < nrem; r++) {
                const int64_t k = removed[r];
                alive[k] = 0;
                if (bbest[k / B] == k) dirty[k / B] = 1;
                holes[r] = eslot[k];
            }
            std::sort(holes.begin(), holes.begin() + nrem);
            const int64_t new_n = n - nrem;
            int64_t s = n - 1;
            for (int64_t h = 0; h < nrem && holes[h] < new_n; h++) {
                while (!alive[slot2elem[s]]) s--;
                const int64_t mv = slot2elem[s], hole = holes[h];
                slot2elem[hole] = mv;
                eslot[mv] = hole;
                // A lower slot: it can only take its block's lead.
                const int64_t b = mv / B;
                if (bbest[b] == mv)
                    bslot[b] = hole;
                else if (!dirty[b] && better(esc[mv], hole, bscore[b], bslot[b])) {
                    bbest[b] = mv;
                    bscore[b] = esc[mv];
                    bslot[b] = hole;
                }
                s--;
            }
            n = new_n;
        }
    }
    return taken;
}

// soft_nms_groups(groups, x1, x2, score, offsets, max_num, method, thr, sigma, min_score, t1,
// t2, out_id, out_sc, counts): soft-NMS of the listed groups (int64) of the float32 columns;
// group g's selections (input positions, decayed scores) go to out_*[offsets[g]:], their number
// to counts[g]. Releases the GIL (groups are independent: nms.py runs chunks on threads).
PyObject* soft_nms_groups(PyObject*, PyObject* args) {
    Buffer groups, x1, x2, score, offsets, out_id, out_sc, counts;
    long long max_num;
    int method;
    float thr, sigma, min_score, t1, t2;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*Lifffffw*w*w*", &groups.view, &x1.view, &x2.view,
                          &score.view, &offsets.view, &max_num, &method, &thr, &sigma,
                          &min_score, &t1, &t2, &out_id.view, &out_sc.view, &counts.view))
        return nullptr;
    Py_BEGIN_ALLOW_THREADS;
    const int64_t* off = offsets.as<int64_t>();
    // The fast kernel needs weight exactly 1 wherever segments do not overlap (not so for
    // method 0 with thr <= 0, nor for a Gaussian with sigma <= 0 or NaN) and finite values.
    const bool fast_method = !(method == 0 && thr <= 0) && (method < 2 || sigma > 0);
    std::vector<float> gx1, gx2, gsc;
    std::vector<int64_t> ids;
    for (int64_t q = 0; q < groups.size<int64_t>(); q++) {
        const int64_t g = groups.as<int64_t>()[q], lo = off[g], n = off[g + 1] - lo;
        Params p{max_num <= 0 ? n : std::min<int64_t>(n, max_num), method, thr, sigma,
                 min_score, t1, t2};
        const float *a = x1.as<float>() + lo, *b = x2.as<float>() + lo;
        const float* c = score.as<float>() + lo;
        bool fast = fast_method;
        for (int64_t k = 0; k < n && fast; k++)
            fast = (b[k] - a[k]) + kEps > 0 && std::isfinite(a[k]) && std::isfinite(b[k]) &&
                   std::isfinite(c[k]);
        int64_t* oid = out_id.as<int64_t>() + lo;
        float* osc = out_sc.as<float>() + lo;
        if (fast) {
            counts.as<int64_t>()[g] = soft_nms_fast(a, b, c, lo, n, p, oid, osc);
        } else {
            gx1.assign(a, a + n), gx2.assign(b, b + n), gsc.assign(c, c + n), ids.resize(n);
            for (int64_t k = 0; k < n; k++) ids[k] = lo + k;
            counts.as<int64_t>()[g] =
                soft_nms_plain(gx1.data(), gx2.data(), gsc.data(), ids.data(), n, p, oid, osc);
        }
    }
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

// hard_nms_groups(groups, x1, x2, order, offsets, max_num, thr, keep): upstream's nms_1d_cpu
// loop for each listed group (int64), over its entries in `order` (sort_desc_groups'): keep[k]
// (uint8) marks the sorted positions it keeps, the first max_num of them (<= 0: all). Releases
// the GIL, as soft_nms_groups.
PyObject* hard_nms_groups(PyObject*, PyObject* args) {
    Buffer groups, x1, x2, order, offsets, keep;
    long long max_num;
    float thr;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*Lfw*", &groups.view, &x1.view, &x2.view,
                          &order.view, &offsets.view, &max_num, &thr, &keep.view))
        return nullptr;
    Py_BEGIN_ALLOW_THREADS;
    const int64_t *off = offsets.as<int64_t>(), *ord = order.as<int64_t>();
    const float *X1 = x1.as<float>(), *X2 = x2.as<float>();
    std::vector<float> area;
    for (int64_t q = 0; q < groups.size<int64_t>(); q++) {
        const int64_t g = groups.as<int64_t>()[q], lo = off[g], n = off[g + 1] - lo;
        const int64_t cap = max_num <= 0 ? n : std::min<int64_t>(n, max_num);
        const int64_t* o = ord + lo;
        uint8_t* sel = keep.as<uint8_t>() + lo;
        area.resize(n);
        for (int64_t k = 0; k < n; k++) area[k] = (X2[o[k]] - X1[o[k]]) + kEps;
        std::fill(sel, sel + n, 1);
        int64_t kept = 0;
        for (int64_t i = 0; i < n; i++) {
            if (!sel[i]) continue;
            if (kept == cap) {  // upstream keeps the rest apart, then cuts at max_num
                std::fill(sel + i, sel + n, 0);
                break;
            }
            kept++;
            for (int64_t j = i + 1; j < n; j++)
                if (sel[j] && overlap(intersection(X1[o[i]], X2[o[i]], X1[o[j]], X2[o[j]]),
                                      area[i], area[j]) >= thr)
                    sel[j] = 0;
        }
    }
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

// group_by_class(video_offsets, label, n_labels, rows, group_start) -> number of groups:
// a stable counting sort per video; classes in order of first appearance within the video.
PyObject* group_by_class(PyObject*, PyObject* args) {
    Buffer video_offsets, label, rows_b, start_b;
    long long n_labels;
    if (!PyArg_ParseTuple(args, "y*y*Lw*w*", &video_offsets.view, &label.view, &n_labels,
                          &rows_b.view, &start_b.view))
        return nullptr;
    const int64_t* voff = video_offsets.as<int64_t>();
    const int64_t* lab = label.as<int64_t>();
    int64_t *rows = rows_b.as<int64_t>(), *group_start = start_b.as<int64_t>();
    int64_t n_groups = 0;
    std::vector<int64_t> rank(n_labels), fill(n_labels), by_rank(n_labels);
    for (int64_t v = 0; v + 1 < video_offsets.size<int64_t>(); v++) {
        const int64_t lo = voff[v], hi = voff[v + 1];
        std::fill(rank.begin(), rank.end(), -1);
        std::fill(fill.begin(), fill.end(), 0);
        int64_t n_seen = 0;
        for (int64_t r = lo; r < hi; r++) {  // rank: order of first appearance; fill: counts
            if (rank[lab[r]] < 0) rank[lab[r]] = n_seen++;
            fill[lab[r]]++;
        }
        for (int64_t c = 0; c < n_labels; c++)
            if (rank[c] >= 0) by_rank[rank[c]] = c;
        int64_t pos = lo;  // group starts in rank order; then fill[c]: next place of class c
        for (int64_t q = 0; q < n_seen; q++) {
            const int64_t c = by_rank[q], count = fill[c];
            group_start[n_groups++] = pos;
            fill[c] = pos;
            pos += count;
        }
        for (int64_t r = lo; r < hi; r++) rows[fill[lab[r]]++] = r;
    }
    group_start[n_groups] = label.size<int64_t>();
    return PyLong_FromLongLong(n_groups);
}

// at::native's KeyValueCompDesc: NaN first, then larger first.
struct Entry {
    float value;
    int64_t index;
};
inline bool comp_desc(const Entry& a, const Entry& b) {
    return (std::isnan(a.value) && !std::isnan(b.value)) || a.value > b.value;
}

// sort_desc_groups(values, offsets, out): per group, torch.sort(values, descending=True)'s
// indices (global). torch sorts a float32 CPU tensor with libstdc++'s std::sort (introsort, not
// stable) on (value, index) pairs with that comparator: this is the same call, so ties come out
// in torch's order without importing torch (checked against torch, tests/test_postprocess.py).
PyObject* sort_desc_groups(PyObject*, PyObject* args) {
    Buffer values, offsets, out;
    if (!PyArg_ParseTuple(args, "y*y*w*", &values.view, &offsets.view, &out.view))
        return nullptr;
    const float* v = values.as<float>();
    const int64_t* off = offsets.as<int64_t>();
    int64_t* o = out.as<int64_t>();
    std::vector<Entry> part;
    for (int64_t g = 0; g + 1 < offsets.size<int64_t>(); g++) {
        const int64_t lo = off[g], hi = off[g + 1];
        part.resize(hi - lo);
        for (int64_t k = lo; k < hi; k++) part[k - lo] = {v[k], k - lo};
        std::sort(part.begin(), part.end(), comp_desc);
        for (int64_t k = lo; k < hi; k++) o[k] = part[k - lo].index + lo;
    }
    Py_RETURN_NONE;
}

// voting_weights(kx1, kx2, ax1, ax2, ascore, thr, out, order, lo, hi): OpenTAD's seg_voting
// weights (iou >= thr) * score into the zeroed float32 K x N `out`, in its operation order.
// IoU >= thr > 0 needs overlap (start < kept end) and a neighbour no longer than kept / thr
// (start > kept start - kept length / thr): a window of the start order, with margin. Writes the
// start order (numpy's stable order, NaN last) and each row's window in it.
PyObject* voting_weights(PyObject*, PyObject* args) {
    Buffer kx1_b, kx2_b, ax1_b, ax2_b, score_b, out_b, order_b, lo_b, hi_b;
    float thr;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*fw*w*w*w*", &kx1_b.view, &kx2_b.view, &ax1_b.view,
                          &ax2_b.view, &score_b.view, &thr, &out_b.view, &order_b.view,
                          &lo_b.view, &hi_b.view))
        return nullptr;
    const float *kx1 = kx1_b.as<float>(), *kx2 = kx2_b.as<float>();
    const float *ax1 = ax1_b.as<float>(), *ax2 = ax2_b.as<float>(), *sc = score_b.as<float>();
    const int64_t K = kx1_b.size<float>(), N = ax1_b.size<float>();
    float* out = out_b.as<float>();
    int64_t *order = order_b.as<int64_t>(), *lo_k = lo_b.as<int64_t>(), *hi_k = hi_b.as<int64_t>();
    for (int64_t j = 0; j < N; j++) order[j] = j;
    std::stable_sort(order, order + N, [ax1](int64_t a, int64_t b) {
        return ax1[a] < ax1[b] || (!std::isnan(ax1[a]) && std::isnan(ax1[b]));
    });
    std::vector<double> sx1(N);
    for (int64_t q = 0; q < N; q++) sx1[q] = ax1[order[q]];
    const double thr64 = std::max(static_cast<double>(thr), 1e-12);
    for (int64_t k = 0; k < K; k++) {
        const float ks = kx1[k], ke = kx2[k];
        const double ks64 = ks, ke64 = ke;
        const int64_t hi = std::lower_bound(sx1.begin(), sx1.end(), ke64) - sx1.begin();
        const double reach = (ke64 - ks64) / thr64 * 1.01 + 1e-6 * (1 + std::fabs(ks64));
        const int64_t lo = std::min<int64_t>(
            std::lower_bound(sx1.begin(), sx1.end(), ks64 - reach) - sx1.begin(), hi);
        for (int64_t q = lo; q < hi; q++) {
            const int64_t j = order[q];
            const float inter = std::max(std::min(ke, ax2[j]) - std::max(ks, ax1[j]), 0.f);
            const float iou = inter / (((ke - ks) + (ax2[j] - ax1[j])) - inter);
            if (iou >= thr) out[k * N + j] = sc[j];
        }
        lo_k[k] = lo;
        hi_k[k] = hi;
    }
    Py_RETURN_NONE;
}

// divide_rows(w, sums, order, lo, hi): w /= sums[:, None] where w can be non-zero (a row without
// neighbours, sum 0, is 0/0: NaN throughout, as upstream).
PyObject* divide_rows(PyObject*, PyObject* args) {
    Buffer w_b, sums_b, order_b, lo_b, hi_b;
    if (!PyArg_ParseTuple(args, "w*y*y*y*y*", &w_b.view, &sums_b.view, &order_b.view,
                          &lo_b.view, &hi_b.view))
        return nullptr;
    float* w = w_b.as<float>();
    const float* sums = sums_b.as<float>();
    const int64_t *order = order_b.as<int64_t>(), *lo = lo_b.as<int64_t>();
    const int64_t* hi = hi_b.as<int64_t>();
    const int64_t K = sums_b.size<float>(), N = K ? w_b.size<float>() / K : 0;
    for (int64_t k = 0; k < K; k++) {
        float* row = w + k * N;
        if (sums[k] == 0)
            std::fill(row, row + N, NAN);
        else
            for (int64_t q = lo[k]; q < hi[k]; q++) row[order[q]] = row[order[q]] / sums[k];
    }
    Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"soft_nms_groups", soft_nms_groups, METH_VARARGS, nullptr},
    {"hard_nms_groups", hard_nms_groups, METH_VARARGS, nullptr},
    {"group_by_class", group_by_class, METH_VARARGS, nullptr},
    {"sort_desc_groups", sort_desc_groups, METH_VARARGS, nullptr},
    {"voting_weights", voting_weights, METH_VARARGS, nullptr},
    {"divide_rows", divide_rows, METH_VARARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_nms", "OpenTAD's NMS kernels (see nms.py).", -1,
                      methods};

}  // namespace

PyMODINIT_FUNC PyInit__nms() { return PyModule_Create(&module); }
