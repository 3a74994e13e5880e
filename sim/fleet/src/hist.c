/* Log-bucketed histogram. Bucket layout (SUB = 128, HALF = 64):
 *   v < SUB                : bucket v (exact)
 *   2^k <= v < 2^(k+1), k>=7: shift s = k - 6 puts v >> s in [64, 128);
 *                            bucket SUB + (s - 1) * HALF + ((v >> s) - HALF)
 * so bucket ranges are contiguous and increasing with the index. */
#include "hist.h"

#include <string.h>

void fl_hist_init(fl_hist *h) {
  memset(h, 0, sizeof(*h));
  h->min = UINT64_MAX;
}

void fl_hist_reset(fl_hist *h) { fl_hist_init(h); }

static unsigned msb(uint64_t v) { return 63u - (unsigned)__builtin_clzll(v); }

size_t fl_hist_index(uint64_t v) {
  if (v > FL_HIST_MAX) v = FL_HIST_MAX;
  if (v < FL_HIST_SUB) return (size_t)v;
  unsigned s = msb(v) - (FL_HIST_SUB_BITS - 1u);
  return FL_HIST_SUB + (size_t)(s - 1u) * FL_HIST_HALF +
         (size_t)((v >> s) - FL_HIST_HALF);
}

uint64_t fl_hist_bucket_lo(size_t idx) {
  if (idx < FL_HIST_SUB) return idx;
  size_t j = idx - FL_HIST_SUB;
  unsigned s = (unsigned)(j / FL_HIST_HALF) + 1u;
  uint64_t m = (uint64_t)(j % FL_HIST_HALF) + FL_HIST_HALF;
  return m << s;
}

uint64_t fl_hist_bucket_hi(size_t idx) {
  if (idx < FL_HIST_SUB) return idx;
  size_t j = idx - FL_HIST_SUB;
  unsigned s = (unsigned)(j / FL_HIST_HALF) + 1u;
  return fl_hist_bucket_lo(idx) + ((UINT64_C(1) << s) - 1u);
}

void fl_hist_record_n(fl_hist *h, uint64_t v, uint64_t n) {
  if (n == 0) return;
  h->counts[fl_hist_index(v)] += n;
  h->count += n;
  if (v < h->min) h->min = v;
  if (v > h->max) h->max = v;
  uint64_t add = v * n;
  if ((n != 0 && add / n != v) || h->sum + add < h->sum) h->sum = UINT64_MAX;
  else h->sum += add;
}

void fl_hist_record(fl_hist *h, uint64_t v) { fl_hist_record_n(h, v, 1); }

void fl_hist_merge(fl_hist *dst, const fl_hist *src) {
  if (src->count == 0) return;
  for (size_t i = 0; i < FL_HIST_NBUCKETS; i++) dst->counts[i] += src->counts[i];
  dst->count += src->count;
  if (src->min < dst->min) dst->min = src->min;
  if (src->max > dst->max) dst->max = src->max;
  if (dst->sum + src->sum < dst->sum) dst->sum = UINT64_MAX;
  else dst->sum += src->sum;
}

uint64_t fl_hist_quantile(const fl_hist *h, double q) {
  if (h->count == 0) return 0;
  if (q <= 0.0) return h->min;
  if (q >= 1.0) return h->max;
  double want = q * (double)h->count;
  uint64_t rank = (uint64_t)want;
  if ((double)rank < want) rank++;
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < FL_HIST_NBUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank) {
      uint64_t v = fl_hist_bucket_hi(i);
      if (v > h->max) v = h->max;
      if (v < h->min) v = h->min;
      return v;
    }
  }
  return h->max;
}

double fl_hist_mean(const fl_hist *h) {
  return h->count ? (double)h->sum / (double)h->count : 0.0;
}

size_t fl_hist_sparse(const fl_hist *h, uint32_t *idx, uint64_t *cnt,
                      size_t max_pairs, size_t *total) {
  size_t n = 0, t = 0;
  for (size_t i = 0; i < FL_HIST_NBUCKETS; i++) {
    if (h->counts[i] == 0) continue;
    if (n < max_pairs) {
      idx[n] = (uint32_t)i;
      cnt[n] = h->counts[i];
      n++;
    }
    t++;
  }
  if (total) *total = t;
  return n;
}

void fl_hist_add_sparse(fl_hist *h, const uint32_t *idx, const uint64_t *cnt,
                        size_t n, uint64_t count, uint64_t min, uint64_t max,
                        uint64_t sum) {
  if (count == 0) return;
  for (size_t i = 0; i < n; i++)
    if (idx[i] < FL_HIST_NBUCKETS) h->counts[idx[i]] += cnt[i];
  h->count += count;
  if (min < h->min) h->min = min;
  if (max > h->max) h->max = max;
  if (h->sum + sum < h->sum) h->sum = UINT64_MAX;
  else h->sum += sum;
}
