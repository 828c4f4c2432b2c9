// gnnreco native module-map triplet stage (gnnreco/graph/module_map.py, ModuleMap._triplet_mask).
//
// An edge (doublet) survives the triplet stage when it is part of at least one hit triplet
// (a -> b -> c, edges e1 = (a, b), e2 = (b, c)) whose module triplet is in the map and whose ten
// features lie inside that triplet's learned windows:
//   0-3  doublet features of e1 (z0, dphi, phi_slope, deta), 4-7 the same for e2,
//   8-9  change of direction between e2 and e1 (d_all[c][e2] - d_all[c][e1]).
// The join runs over "first" edges (those whose module pair starts a map triplet) and, for each,
// the "second" edges leaving its middle hit (CSR by source hit). Work is split in blocks of first
// edges handed out through an atomic counter to `threads` std::threads; survivors are marked with
// relaxed atomic byte stores (several triplets may mark the same edge).
//
// Plain C ABI on raw pointers (no torch headers), loaded with ctypes by gnnreco.graph._mm_native.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

struct Args {
  const int64_t* first;   // [n_first] edge ids of edges whose module pair starts a map triplet
  int64_t n_first;
  const int64_t* cstart;  // [N] first position of a hit's outgoing "second" edges in `second`
  const int64_t* ccnt;    // [N] number of them
  const int64_t* second;  // edge ids (module pair ends a map triplet), grouped by source hit
  const int64_t* dst;     // [E]
  const int64_t* k12;     // [E] dense module-pair key d1 * K + d2 (-1: unknown module)
  const int64_t* d2;      // [E] dense module index of the target hit
  int64_t K;
  const int64_t* tk;      // [T] sorted triplet keys (k12 * K + d3)
  int64_t T;
  const double* feats;    // [4, E] doublet features
  const double* dir0;     // [E] dz/dr
  const double* dir1;     // [E] dy/dx
  int64_t E;
  const double* lo;       // [10, T]
  const double* hi;       // [10, T]
  double glo0, glo1, ghi0, ghi1;
  uint8_t* keep;          // [E] output mask
};

// the windows in the order of the torch implementation (azimuthal features first: most selective)
constexpr int kOrder[10] = {1, 5, 2, 6, 0, 4, 3, 7, 8, 9};

inline void mark(uint8_t* p) { __atomic_store_n(p, static_cast<uint8_t>(1), __ATOMIC_RELAXED); }

inline bool member(const int64_t* keys, int64_t n, int64_t k) {
  const int64_t* it = std::lower_bound(keys, keys + n, k);
  return it != keys + n && *it == k;
}

void join_block(const Args& a, int64_t b0, int64_t b1) {
  const int64_t* tk_end = a.tk + a.T;
  for (int64_t f = b0; f < b1; ++f) {
    const int64_t e1 = a.first[f];
    const int64_t m = a.dst[e1];
    const int64_t key1 = a.k12[e1];
    const int64_t s0 = a.cstart[m], sn = a.ccnt[m];
    const double e1d0 = a.dir0[e1], e1d1 = a.dir1[e1];
    for (int64_t s = s0; s < s0 + sn; ++s) {
      const int64_t e2 = a.second[s];
      const double v0 = a.dir0[e2] - e1d0;
      if (!(v0 >= a.glo0 && v0 <= a.ghi0)) continue;
      const double v1 = a.dir1[e2] - e1d1;
      if (!(v1 >= a.glo1 && v1 <= a.ghi1)) continue;
      const int64_t key = key1 * a.K + a.d2[e2];
      const int64_t* it = std::lower_bound(a.tk, tk_end, key);
      if (it == tk_end || *it != key) continue;
      const int64_t j = it - a.tk;
      bool ok = true;
      for (int w = 0; w < 10 && ok; ++w) {
        const int c = kOrder[w];
        double v;
        if (c < 4) v = a.feats[c * a.E + e1];
        else if (c < 8) v = a.feats[(c - 4) * a.E + e2];
        else v = (c == 8) ? v0 : v1;
        ok = (v >= a.lo[c * a.T + j]) && (v <= a.hi[c * a.T + j]);
      }
      if (ok) {
        mark(a.keep + e1);
        mark(a.keep + e2);
      }
    }
  }
}

// run fn(b0, b1) over [0, n) in blocks handed out through an atomic counter on `threads` threads
template <class F>
void parallel_blocks(int64_t n, int64_t block, int threads, F fn) {
  if (n <= 0) return;
  const int64_t n_blocks = (n + block - 1) / block;
  const int nt = std::max(1, static_cast<int>(std::min<int64_t>(threads, n_blocks)));
  if (nt == 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::atomic<int64_t> next{0};
  auto worker = [&]() {
    for (;;) {
      const int64_t b = next.fetch_add(1, std::memory_order_relaxed);
      if (b >= n_blocks) break;
      fn(b * block, std::min(n, (b + 1) * block));
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(nt - 1);
  for (int t = 1; t < nt; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
}

}  // namespace

extern "C" {

int gnr_mm_version() { return 3; }

// Triplet stage of one event. Hits: dense module index dh[N] (-1: module not in the map) and
// Cartesian/cylindrical coordinates r, z, x, y [N]. Edges: src, dst [E] and their doublet features
// feats [4, E]. Map: sorted heads (module pairs starting a triplet), tails (pairs ending one) and
// triplet keys tk, windows lo/hi [10, T], union of the direction windows glo/ghi [2].
// Writes keep[E] (1: the edge is in at least one triplet inside its windows). Returns 0 on success,
// 1 when an allocation fails.
int gnr_mm_triplets(int64_t N, const int64_t* dh, const double* r, const double* z, const double* x,
                    const double* y, int64_t E, const int64_t* src, const int64_t* dst, const double* feats,
                    int64_t K, const int64_t* heads, int64_t n_heads, const int64_t* tails, int64_t n_tails,
                    const int64_t* tk, int64_t T, const double* lo, const double* hi, const double* glo,
                    const double* ghi, uint8_t* keep, int threads) {
  if (E <= 0 || T <= 0) return 0;
  try {
    std::vector<int64_t> k12(E), d2(E);
    std::vector<double> dir0(E), dir1(E);
    std::vector<uint8_t> role(E);  // bit 0: first (starts a triplet), bit 1: second (ends one)
    parallel_blocks(E, 1 << 15, threads, [&](int64_t b0, int64_t b1) {
      for (int64_t e = b0; e < b1; ++e) {
        const int64_t s = src[e], d = dst[e];
        const int64_t a = dh[s], b = dh[d];
        const int64_t key = (a >= 0 && b >= 0) ? a * K + b : -1;
        k12[e] = key;
        d2[e] = b;
        uint8_t ro = 0;
        if (key >= 0) {
          if (member(heads, n_heads, key)) ro |= 1;
          if (member(tails, n_tails, key)) ro |= 2;
        }
        role[e] = ro;
        double dr = r[d] - r[s], dx = x[d] - x[s];
        if (dr == 0) dr = 1e-12;
        if (dx == 0) dx = 1e-12;
        dir0[e] = (z[d] - z[s]) / dr;
        dir1[e] = (y[d] - y[s]) / dx;
      }
    });
    // second edges grouped by source hit (counting sort, edge order kept within a hit)
    std::vector<int64_t> cnt(N, 0), start(N, 0), first;
    int64_t n_second = 0;
    for (int64_t e = 0; e < E; ++e) {
      if (role[e] & 2) {
        ++cnt[src[e]];
        ++n_second;
      }
    }
    for (int64_t i = 1; i < N; ++i) start[i] = start[i - 1] + cnt[i - 1];
    std::vector<int64_t> second(n_second), fill(start);
    for (int64_t e = 0; e < E; ++e) {
      if (role[e] & 2) second[fill[src[e]]++] = e;
      if ((role[e] & 1) && cnt[dst[e]] > 0) first.push_back(e);
    }
    Args a{first.data(), static_cast<int64_t>(first.size()), start.data(), cnt.data(), second.data(), dst,
           k12.data(), d2.data(), K, tk, T, feats, dir0.data(), dir1.data(), E, lo, hi,
           glo[0], glo[1], ghi[0], ghi[1], keep};
    parallel_blocks(a.n_first, 512, threads, [&](int64_t b0, int64_t b1) { join_block(a, b0, b1); });
  } catch (const std::bad_alloc&) {
    return 1;
  }
  return 0;
}

// Doublet stage of one event. Hits sorted by module: `order` [N] (hit ids), and per dense module m < M
// the first position first_m[m] and count cnt_m[m] in `order`. Map: n_keys module pairs
// (m1[p], m2[p]) with windows lo/hi [4, n_keys] (rows z0, dphi, phi_slope, deta). Hit coordinates
// r, phi, z and eta [N]. Every hit pair (a in m1, b in m2, a != b) inside all four windows is
// written as src/dst with its features, in the order (pair, hit of m1, hit of m2). The outputs are
// allocated here (gnr_mm_free releases them); returns the number of doublets, or -1 when out of memory.
int64_t gnr_mm_doublets(const int64_t* order, const int64_t* first_m, const int64_t* cnt_m, const int64_t* m1,
                        const int64_t* m2, int64_t n_keys, const double* lo, const double* hi, const double* r,
                        const double* phi, const double* z, const double* eta, int64_t** out_src,
                        int64_t** out_dst, double** out_feats, int threads) {
  const double pi = 3.14159265358979323846, two_pi = 2.0 * pi;
  try {
    const int64_t block = 256;
    const int64_t n_blocks = (n_keys + block - 1) / block;
    std::vector<std::vector<int64_t>> bs(n_blocks), bd(n_blocks);
    std::vector<std::vector<double>> bf(n_blocks);
    parallel_blocks(n_blocks, 1, threads, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        auto& S = bs[b];
        auto& D = bd[b];
        auto& F = bf[b];
        const int64_t p1 = std::min(n_keys, (b + 1) * block);
        for (int64_t p = b * block; p < p1; ++p) {
          const int64_t f1 = first_m[m1[p]], c1 = cnt_m[m1[p]];
          const int64_t f2 = first_m[m2[p]], c2 = cnt_m[m2[p]];
          if (c1 == 0 || c2 == 0) continue;
          const double lz = lo[p], hz = hi[p];
          const double lp = lo[n_keys + p], hp = hi[n_keys + p];
          const double ls = lo[2 * n_keys + p], hs = hi[2 * n_keys + p];
          const double le = lo[3 * n_keys + p], he = hi[3 * n_keys + p];
          for (int64_t i = 0; i < c1; ++i) {
            const int64_t a = order[f1 + i];
            const double ra = r[a], pa = phi[a], za = z[a];
            for (int64_t j = 0; j < c2; ++j) {
              const int64_t c = order[f2 + j];
              // wrap into [-pi, pi): remainder(d + pi, 2 pi) - pi, as torch.remainder (sign of the divisor)
              const double w = (phi[c] - pa) + pi;
              double m = std::fmod(w, two_pi);
              if (m != 0 && m < 0) m += two_pi;
              const double dphi = m - pi;
              if (!(dphi >= lp && dphi <= hp) || a == c) continue;
              double dr = r[c] - ra;
              if (dr == 0) dr = 1e-12;
              const double slope = dphi / dr;
              if (!(slope >= ls && slope <= hs)) continue;
              const double z0 = za - ra * (z[c] - za) / dr;
              if (!(z0 >= lz && z0 <= hz)) continue;
              const double deta = eta[c] - eta[a];
              if (!(deta >= le && deta <= he)) continue;
              S.push_back(a);
              D.push_back(c);
              F.push_back(z0);
              F.push_back(dphi);
              F.push_back(slope);
              F.push_back(deta);
            }
          }
        }
      }
    });
    int64_t n = 0;
    for (auto& v : bs) n += static_cast<int64_t>(v.size());
    int64_t* src = static_cast<int64_t*>(std::malloc(sizeof(int64_t) * std::max<int64_t>(n, 1)));
    int64_t* dst = static_cast<int64_t*>(std::malloc(sizeof(int64_t) * std::max<int64_t>(n, 1)));
    double* feats = static_cast<double*>(std::malloc(sizeof(double) * 4 * std::max<int64_t>(n, 1)));
    if (!src || !dst || !feats) {
      std::free(src);
      std::free(dst);
      std::free(feats);
      return -1;
    }
    int64_t o = 0;
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t k = static_cast<int64_t>(bs[b].size());
      std::copy(bs[b].begin(), bs[b].end(), src + o);
      std::copy(bd[b].begin(), bd[b].end(), dst + o);
      for (int64_t i = 0; i < k; ++i)
        for (int c = 0; c < 4; ++c) feats[c * n + o + i] = bf[b][4 * i + c];  // rows z0, dphi, slope, deta
      o += k;
    }
    *out_src = src;
    *out_dst = dst;
    *out_feats = feats;
    return n;
  } catch (const std::bad_alloc&) {
    return -1;
  }
}

void gnr_mm_free(void* p) { std::free(p); }

}  // extern "C"
