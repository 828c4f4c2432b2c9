// gnnreco native neighbour search: one k-d tree per event, exact kNN and radius queries.
//
// Plain C++17 with an extern "C" API on raw pointers, compiled on first use by
// gnnreco/graph/_native.py (no torch headers) and loaded with ctypes.
//
// Tree. Per event, points are split recursively at the median of their widest bounding-box
// dimension (std::nth_element) until a node holds at most LEAF points. Nodes are stored in
// preorder: the left child of node i is i + 1 and the right child's index is stored; since the
// left half always gets floor(n / 2) points the shape depends on n only, so subtrees can be built
// by separate threads into disjoint ranges. An internal node keeps the largest coordinate of its
// left half (lo) and the smallest of its right half (hi) along the split dimension. Coordinates are
// copied in tree order, so a leaf's points are contiguous.
//
// Query. Depth first, nearer child first; the far child is visited only when the squared distance
// from the query to the far child's slab region (maintained incrementally per dimension, as in
// Arya & Mount's incremental distance computation) is not larger than the current k-th distance.
// kNN keeps a sorted array of the k best (distance, index) pairs, so ties are broken by the smaller
// point index and the result equals a sort of all candidates by (distance, index). Distances are
// accumulated in double for float32 and float64 coordinates.
//
// Parallelism: std::thread workers pull chunks of queries from an atomic counter (one OpenMP
// runtime is already loaded by torch; a second one in the same process is avoided).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <thread>
#include <utility>
#include <vector>

namespace {

#ifndef GNR_LEAF
#define GNR_LEAF 10
#endif
constexpr int32_t LEAF = GNR_LEAF;
constexpr double SLACK = 1.0 + 1e-9;  // rounding margin of the incremental box distance
constexpr double INF = std::numeric_limits<double>::infinity();

template <typename T>
struct Node {
    T lo, hi;      // internal: max of the left half, min of the right half along dim
    int32_t dim;   // split dimension; -1 for a leaf
    int32_t a, b;  // internal: a = right child; leaf: [a, b) positions in the event's point range
};

int64_t count_nodes(int64_t n) {
    if (n <= LEAF) return 1;
    return 1 + count_nodes(n / 2) + count_nodes(n - n / 2);
}

// Run fn(item) for item in [0, n) on up to `threads` workers (dynamic, one item at a time).
template <typename F>
void parallel_items(int64_t n, int threads, F&& fn) {
    if (n <= 0) return;
    int t = (int)std::max<int64_t>(1, std::min<int64_t>(threads, n));
    if (t == 1) {
        for (int64_t i = 0; i < n; ++i) fn(i, 0);
        return;
    }
    std::atomic<int64_t> next(0);
    auto work = [&](int tid) {
        for (;;) {
            int64_t i = next.fetch_add(1, std::memory_order_relaxed);
            if (i >= n) break;
            fn(i, tid);
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(t - 1);
    for (int w = 1; w < t; ++w) pool.emplace_back(work, w);
    work(0);
    for (auto& th : pool) th.join();
}

struct TreeBase {
    virtual ~TreeBase() = default;
    virtual int knn(const void* y, const int64_t* ptr_y, int y_is_x, int64_t k, int exclude_self,
                    int dense, int64_t* out_q, int64_t* out_n, int threads) = 0;
    virtual int radius(const void* y, const int64_t* ptr_y, int y_is_x, double r, int exclude_self,
                       int64_t max_nb, int64_t* counts, const int64_t* offsets, int64_t* out_q,
                       int64_t* out_n, int threads) = 0;
};

template <typename T>
struct Tree : TreeBase {
    int64_t D = 0, nb = 0, n = 0;
    std::vector<int64_t> ptr;       // event ranges of the points (nb + 1)
    std::vector<int64_t> node_off;  // first node of each event (nb + 1)
    std::vector<Node<T>> nodes;
    std::vector<int32_t> perm;      // tree position -> index within the event
    std::vector<T> pts;             // coordinates in tree order, n * D

    // ------------------------------------------------------------------ build
    void build(const T* x, int64_t dim, const int64_t* ptr_x, int64_t num_events, int threads) {
        D = dim;
        nb = num_events;
        ptr.assign(ptr_x, ptr_x + nb + 1);
        n = ptr[nb];
        node_off.assign(nb + 1, 0);
        for (int64_t e = 0; e < nb; ++e) {
            int64_t ne = ptr[e + 1] - ptr[e];
            node_off[e + 1] = node_off[e] + (ne > 0 ? count_nodes(ne) : 0);
        }
        nodes.resize(node_off[nb]);
        perm.resize(n);
        pts.resize((size_t)n * D);
        const int64_t big = 1 << 15;
        std::vector<int64_t> small, large;
        for (int64_t e = 0; e < nb; ++e) {
            int64_t ne = ptr[e + 1] - ptr[e];
            if (ne == 0) continue;
            (ne >= big && threads > 1 ? large : small).push_back(e);
        }
        parallel_items((int64_t)small.size(), threads, [&](int64_t i, int) { build_event(x, small[i], 1); });
        for (int64_t e : large) build_event(x, e, threads);
        // coordinates in tree order
        parallel_items((n + 8191) / 8192, threads, [&](int64_t c, int) {
            int64_t s = c * 8192, t = std::min(n, s + 8192);
            // event of position s
            int64_t e = std::upper_bound(ptr.begin(), ptr.end(), s) - ptr.begin() - 1;
            for (int64_t p = s; p < t; ++p) {
                while (p >= ptr[e + 1]) ++e;
                const T* src = x + (size_t)(ptr[e] + perm[p]) * D;
                std::memcpy(&pts[(size_t)p * D], src, sizeof(T) * D);
            }
        });
    }

    void build_event(const T* x, int64_t e, int threads) {
        int64_t x0 = ptr[e], ne = ptr[e + 1] - x0;
        int32_t* pm = perm.data() + x0;
        for (int64_t i = 0; i < ne; ++i) pm[i] = (int32_t)i;
        build_rec(x + (size_t)x0 * D, pm, nodes.data() + node_off[e], 0, 0, (int32_t)ne, threads);
    }

    void build_rec(const T* x, int32_t* pm, Node<T>* nd, int64_t ni, int32_t lo, int32_t hi, int threads) {
        int32_t cnt = hi - lo;
        Node<T>& node = nd[ni];
        if (cnt <= LEAF) {
            node.dim = -1;
            node.a = lo;
            node.b = hi;
            return;
        }
        // widest dimension of the bounding box
        int best = 0;
        T bestw = -1;
        for (int64_t d = 0; d < D; ++d) {
            T mn = x[(size_t)pm[lo] * D + d], mx = mn;
            for (int32_t i = lo + 1; i < hi; ++i) {
                T v = x[(size_t)pm[i] * D + d];
                mn = v < mn ? v : mn;
                mx = v > mx ? v : mx;
            }
            if (mx - mn > bestw) {
                bestw = mx - mn;
                best = (int)d;
            }
        }
        int32_t mid = lo + cnt / 2;
        const int64_t DD = D;
        std::nth_element(pm + lo, pm + mid, pm + hi, [x, DD, best](int32_t a, int32_t b) {
            return x[(size_t)a * DD + best] < x[(size_t)b * DD + best];
        });
        T lmax = x[(size_t)pm[lo] * D + best];
        for (int32_t i = lo + 1; i < mid; ++i) lmax = std::max(lmax, x[(size_t)pm[i] * D + best]);
        node.dim = best;
        node.lo = lmax;
        node.hi = x[(size_t)pm[mid] * D + best];
        int64_t left = ni + 1, right = ni + 1 + count_nodes(mid - lo);
        node.a = (int32_t)right;
        if (threads > 1 && cnt > (1 << 14)) {
            int tl = threads / 2;
            std::thread th([&, tl] { build_rec(x, pm, nd, left, lo, mid, tl); });
            build_rec(x, pm, nd, right, mid, hi, threads - tl);
            th.join();
        } else {
            build_rec(x, pm, nd, left, lo, mid, 1);
            build_rec(x, pm, nd, right, mid, hi, 1);
        }
    }

    // ------------------------------------------------------------------ queries
    // One query against one event's tree. DIM > 0: compile-time dimension.
    template <int DIM>
    struct Search {
        const T* pts;         // event's points in tree order
        const int32_t* perm;  // event's permutation
        const Node<T>* nodes;
        int64_t D;
        const T* q;
        int32_t self;  // index within the event to skip, -1 for none
        double* off;   // per-dimension lower-bound components
        // kNN state
        int64_t kk = 0, cnt = 0;
        double* bd = nullptr;
        int32_t* bi = nullptr;
        // radius state
        double r2 = 0;
        std::vector<std::pair<double, int32_t>>* found = nullptr;
        int64_t nfound = 0;

        inline int64_t dims() const { return DIM > 0 ? DIM : D; }

        inline double dist(int32_t p) const {
            const T* a = pts + (size_t)p * dims();
            double s = 0;
            for (int64_t c = 0; c < dims(); ++c) {
                double t = (double)a[c] - (double)q[c];
                s += t * t;
            }
            return s;
        }

        inline double worst() const { return cnt < kk ? INF : bd[kk - 1]; }

        inline void insert(double d, int32_t j) {
            int64_t pos;
            if (cnt < kk) {
                pos = cnt++;
            } else {
                if (d == bd[kk - 1] && j > bi[kk - 1]) return;
                pos = kk - 1;
            }
            while (pos > 0 && (bd[pos - 1] > d || (bd[pos - 1] == d && bi[pos - 1] > j))) {
                bd[pos] = bd[pos - 1];
                bi[pos] = bi[pos - 1];
                --pos;
            }
            bd[pos] = d;
            bi[pos] = j;
        }

        // children of an inner node, nearer first, and the squared gap to the farther one along its axis
        static void split(const Node<T>& nd, int64_t ni, double v, int64_t& first, int64_t& second, double& cut) {
            double d1 = v - (double)nd.lo, d2 = v - (double)nd.hi;
            if (d1 + d2 < 0) {
                first = ni + 1;
                second = nd.a;
                cut = d2 * d2;
            } else {
                first = nd.a;
                second = ni + 1;
                cut = d1 * d1;
            }
        }

        // one leaf point at squared distance d: kNN keeps the k best, the ball collects (found != nullptr)
        // or counts the points with d < r2
        template <bool KNN>
        void visit_point(int32_t p) {
            double d = dist(p);
            if (KNN) {
                if (cnt == kk && d > bd[kk - 1]) return;
            } else if (!(d < r2)) {
                return;
            }
            int32_t j = perm[p];
            if (j == self) return;
            if (KNN) {
                insert(d, j);
            } else {
                if (found) found->emplace_back(d, j);
                ++nfound;
            }
        }

        // depth-first descent, nearer child first; the farther child only while its box can still hold a
        // point that counts (kNN: within the current k-th distance; ball: within r)
        template <bool KNN>
        void descend(int64_t ni, double rd) {
            const Node<T>& nd = nodes[ni];
            if (nd.dim < 0) {
                for (int32_t p = nd.a; p < nd.b; ++p) visit_point<KNN>(p);
                return;
            }
            int dm = nd.dim;
            int64_t first, second;
            double cut;
            split(nd, ni, (double)q[dm], first, second, cut);
            descend<KNN>(first, rd);
            double old = off[dm];
            double nrd = rd + cut - old;
            if (KNN ? nrd <= worst() * SLACK : nrd < r2 * SLACK) {
                off[dm] = cut;
                descend<KNN>(second, nrd);
                off[dm] = old;
            }
        }

        void knn(int64_t ni, double rd) { descend<true>(ni, rd); }
        void ball(int64_t ni, double rd) { descend<false>(ni, rd); }
    };

    // Work items: chunks of queries inside one event.
    struct Chunk {
        int64_t e, s, t;  // event, first and end query (tree positions if y_is_x, else y rows)
    };

    std::vector<Chunk> chunks(const int64_t* ptr_y, int y_is_x) const {
        std::vector<Chunk> out;
        const int64_t step = 256;
        for (int64_t e = 0; e < nb; ++e) {
            int64_t a = y_is_x ? ptr[e] : ptr_y[e], b = y_is_x ? ptr[e + 1] : ptr_y[e + 1];
            if (ptr[e + 1] == ptr[e]) continue;  // no points: no neighbours
            for (int64_t s = a; s < b; s += step) out.push_back({e, s, std::min(b, s + step)});
        }
        return out;
    }

    template <int DIM>
    Search<DIM> searcher(int64_t e, double* off) const {
        Search<DIM> s;
        s.pts = pts.data() + (size_t)ptr[e] * D;
        s.perm = perm.data() + ptr[e];
        s.nodes = nodes.data() + node_off[e];
        s.D = D;
        s.off = off;
        return s;
    }

    // point the search at query p of event e (a tree point when y is x) and reset its bounds; returns
    // the query's global index
    template <int DIM>
    inline int64_t start_query(Search<DIM>& s, const T* y, int y_is_x, int exclude_self, int64_t e,
                               int64_t p) const {
        int64_t x0 = ptr[e], qid;
        if (y_is_x) {
            qid = x0 + perm[p];
            s.q = pts.data() + (size_t)p * D;
            s.self = exclude_self ? perm[p] : -1;
        } else {
            qid = p;
            s.q = y + (size_t)p * D;
            s.self = (exclude_self && p >= x0 && p < ptr[e + 1]) ? (int32_t)(p - x0) : -1;
        }
        for (int64_t d = 0; d < D; ++d) s.off[d] = 0.0;
        return qid;
    }

    template <int DIM>
    int knn_impl(const T* y, const int64_t* ptr_y, int y_is_x, int64_t k, int exclude_self, int dense,
                 int64_t* out_q, int64_t* out_n, int threads) {
        // edge offsets: every query of event e finds min(k, n_e - excl) neighbours
        std::vector<int64_t> eoff(nb + 1, 0), ecnt(nb, 0);
        int64_t kmax = 1;  // the longest neighbour list any query can hold (k may exceed every event)
        for (int64_t e = 0; e < nb; ++e) {
            int64_t ne = ptr[e + 1] - ptr[e];
            kmax = std::max(kmax, std::min(k, ne));
            int64_t ny = y_is_x ? ne : ptr_y[e + 1] - ptr_y[e];
            int64_t avail = ne - ((exclude_self && ne > 0) ? 1 : 0);
            ecnt[e] = std::max<int64_t>(0, std::min(k, avail));
            eoff[e + 1] = eoff[e] + ny * ecnt[e];
        }
        std::vector<Chunk> work = chunks(ptr_y, y_is_x);
        int t = (int)std::max<int64_t>(1, std::min<int64_t>(threads, (int64_t)work.size()));
        std::vector<std::vector<double>> scratch(t);
        std::atomic<int> bad(0);
        parallel_items((int64_t)work.size(), t, [&](int64_t wi, int tid) {
            std::vector<double>& buf = scratch[tid];
            if (buf.empty()) buf.resize((size_t)(2 * kmax + D + 2));
            double* bd = buf.data();
            int32_t* bi = reinterpret_cast<int32_t*>(bd + kmax);
            double* off = bd + 2 * kmax;  // kmax doubles, kmax int32 (in kmax doubles' room), D doubles
            const Chunk& c = work[wi];
            int64_t x0 = ptr[c.e];
            int64_t ne = ptr[c.e + 1] - x0;
            Search<DIM> s = searcher<DIM>(c.e, off);
            s.bd = bd;
            s.bi = bi;
            for (int64_t p = c.s; p < c.t; ++p) {
                int64_t qid = start_query(s, y, y_is_x, exclude_self, c.e, p);
                s.kk = std::min<int64_t>(k, ne);
                s.cnt = 0;
                s.knn(0, 0.0);
                int64_t m = s.cnt;
                if (dense) {
                    int64_t* row = out_n + qid * k;
                    for (int64_t r = 0; r < m; ++r) row[r] = x0 + bi[r];
                } else {
                    if (m != ecnt[c.e]) {
                        bad.store(1);
                        m = std::min(m, ecnt[c.e]);
                    }
                    int64_t ybase = y_is_x ? ptr[c.e] : ptr_y[c.e];
                    int64_t o = eoff[c.e] + (qid - ybase) * ecnt[c.e];
                    for (int64_t r = 0; r < m; ++r) {
                        out_q[o + r] = qid;
                        out_n[o + r] = x0 + bi[r];
                    }
                }
            }
        });
        return bad.load() ? 2 : 0;
    }

    // counts != nullptr and offsets == nullptr: counting pass (counts[q] = points within r).
    // offsets != nullptr: fill pass, the min(count, max_nb) nearest written at offsets[q].
    template <int DIM>
    int radius_impl(const T* y, const int64_t* ptr_y, int y_is_x, double r, int exclude_self, int64_t max_nb,
                    int64_t* counts, const int64_t* offsets, int64_t* out_q, int64_t* out_n, int threads) {
        std::vector<Chunk> work = chunks(ptr_y, y_is_x);
        int t = (int)std::max<int64_t>(1, std::min<int64_t>(threads, (int64_t)work.size()));
        std::vector<std::vector<double>> scratch(t);
        std::vector<std::vector<std::pair<double, int32_t>>> found(t);
        const double r2 = r * r;
        parallel_items((int64_t)work.size(), t, [&](int64_t wi, int tid) {
            std::vector<double>& off = scratch[tid];
            if (off.empty()) off.resize((size_t)D + 1);
            const Chunk& c = work[wi];
            int64_t x0 = ptr[c.e];
            Search<DIM> s = searcher<DIM>(c.e, off.data());
            s.r2 = r2;
            std::vector<std::pair<double, int32_t>>& f = found[tid];
            s.found = offsets ? &f : nullptr;
            for (int64_t p = c.s; p < c.t; ++p) {
                int64_t qid = start_query(s, y, y_is_x, exclude_self, c.e, p);
                s.nfound = 0;
                f.clear();
                s.ball(0, 0.0);
                if (!offsets) {
                    counts[qid] = s.nfound;
                    continue;
                }
                int64_t m = std::min<int64_t>((int64_t)f.size(), max_nb);
                if (m < (int64_t)f.size()) {
                    std::nth_element(f.begin(), f.begin() + m, f.end());
                    f.resize(m);
                }
                std::sort(f.begin(), f.end());
                int64_t o = offsets[qid];
                for (int64_t i = 0; i < m; ++i) {
                    out_q[o + i] = qid;
                    out_n[o + i] = x0 + f[i].second;
                }
            }
        });
        return 0;
    }

    int knn(const void* y, const int64_t* ptr_y, int y_is_x, int64_t k, int exclude_self, int dense,
            int64_t* out_q, int64_t* out_n, int threads) override {
        const T* yy = static_cast<const T*>(y);
        switch (D) {
            case 1: return knn_impl<1>(yy, ptr_y, y_is_x, k, exclude_self, dense, out_q, out_n, threads);
            case 2: return knn_impl<2>(yy, ptr_y, y_is_x, k, exclude_self, dense, out_q, out_n, threads);
            case 3: return knn_impl<3>(yy, ptr_y, y_is_x, k, exclude_self, dense, out_q, out_n, threads);
            case 4: return knn_impl<4>(yy, ptr_y, y_is_x, k, exclude_self, dense, out_q, out_n, threads);
            case 8: return knn_impl<8>(yy, ptr_y, y_is_x, k, exclude_self, dense, out_q, out_n, threads);
            default: return knn_impl<0>(yy, ptr_y, y_is_x, k, exclude_self, dense, out_q, out_n, threads);
        }
    }

    int radius(const void* y, const int64_t* ptr_y, int y_is_x, double r, int exclude_self, int64_t max_nb,
               int64_t* counts, const int64_t* offsets, int64_t* out_q, int64_t* out_n, int threads) override {
        const T* yy = static_cast<const T*>(y);
        switch (D) {
            case 2: return radius_impl<2>(yy, ptr_y, y_is_x, r, exclude_self, max_nb, counts, offsets, out_q, out_n, threads);
            case 3: return radius_impl<3>(yy, ptr_y, y_is_x, r, exclude_self, max_nb, counts, offsets, out_q, out_n, threads);
            default: return radius_impl<0>(yy, ptr_y, y_is_x, r, exclude_self, max_nb, counts, offsets, out_q, out_n, threads);
        }
    }
};

}  // namespace

extern "C" {

// Version of this API; the loader checks it.
int gnr_native_version() { return 1; }

// Build the per-event trees of x ([n, dim] row-major; dtype 0 = float32, 1 = float64;
// ptr_x: nb + 1 event offsets). Returns an opaque handle, or nullptr on failure.
void* gnr_tree_build(const void* x, int64_t dim, int dtype, const int64_t* ptr_x, int64_t nb, int threads) {
    try {
        if (dtype == 0) {
            auto* t = new Tree<float>();
            t->build(static_cast<const float*>(x), dim, ptr_x, nb, threads);
            return static_cast<TreeBase*>(t);
        }
        if (dtype == 1) {
            auto* t = new Tree<double>();
            t->build(static_cast<const double*>(x), dim, ptr_x, nb, threads);
            return static_cast<TreeBase*>(t);
        }
    } catch (...) {
    }
    return nullptr;
}

void gnr_tree_free(void* tree) { delete static_cast<TreeBase*>(tree); }

// kNN of every query. y_is_x: queries are the tree's own points (y ignored, ptr_y ignored).
// dense: out_n is [M, k] (rows of found neighbours; the rest untouched), out_q unused;
// otherwise out_q / out_n are the two rows of the [2, E] edge list, E = sum_e ny_e min(k, n_e - excl).
// Returns 0, 1 on an exception, 2 if a query found fewer neighbours than its event allows.
int gnr_tree_knn(void* tree, const void* y, const int64_t* ptr_y, int y_is_x, int64_t k, int exclude_self,
                 int dense, int64_t* out_q, int64_t* out_n, int threads) {
    try {
        return static_cast<TreeBase*>(tree)->knn(y, ptr_y, y_is_x, k, exclude_self, dense, out_q, out_n, threads);
    } catch (...) {
        return 1;
    }
}

// Radius search (strict d < r). Counting pass: offsets == nullptr, counts[q] = points within r.
// Fill pass: the min(count, max_nb) nearest of query q are written at offsets[q], nearest first.
int gnr_tree_radius(void* tree, const void* y, const int64_t* ptr_y, int y_is_x, double r, int exclude_self,
                    int64_t max_nb, int64_t* counts, const int64_t* offsets, int64_t* out_q, int64_t* out_n,
                    int threads) {
    try {
        return static_cast<TreeBase*>(tree)->radius(y, ptr_y, y_is_x, r, exclude_self, max_nb, counts, offsets,
                                                     out_q, out_n, threads);
    } catch (...) {
        return 1;
    }
}

}  // extern "C"
