/* A mergeable log-bucketed histogram (HdrHistogram-like) of non-negative
 * integer values, used for latencies in microseconds.
 *
 * Values below 2^FL_HIST_SUB_BITS are counted exactly; above, each power of
 * two is split into 2^(FL_HIST_SUB_BITS-1) equal sub-buckets, so a bucket's
 * width is at most 1/64 of its lower bound (relative error < 1.6%). Values
 * above FL_HIST_MAX land in the last bucket; min, max, count and sum are
 * always exact. Two histograms merge by adding their counts, so per-worker
 * and per-second histograms combine into exact totals. */
#ifndef FL_HIST_H
#define FL_HIST_H

#include <stddef.h>
#include <stdint.h>

#define FL_HIST_SUB_BITS 7u
#define FL_HIST_SUB (1u << FL_HIST_SUB_BITS)       /* 128 */
#define FL_HIST_HALF (FL_HIST_SUB / 2u)             /* 64 */
#define FL_HIST_MAX_BITS 40u                        /* ~12.7 days in us */
#define FL_HIST_MAX ((UINT64_C(1) << FL_HIST_MAX_BITS) - 1u)
#define FL_HIST_NBUCKETS \
  (FL_HIST_SUB + (FL_HIST_MAX_BITS - FL_HIST_SUB_BITS) * FL_HIST_HALF)

typedef struct {
  uint64_t count;
  uint64_t min; /* UINT64_MAX when empty */
  uint64_t max;
  uint64_t sum; /* saturates at UINT64_MAX */
  uint64_t counts[FL_HIST_NBUCKETS];
} fl_hist;

void fl_hist_init(fl_hist *h);
void fl_hist_reset(fl_hist *h);
void fl_hist_record(fl_hist *h, uint64_t v);
void fl_hist_record_n(fl_hist *h, uint64_t v, uint64_t n);
/* dst += src. */
void fl_hist_merge(fl_hist *dst, const fl_hist *src);

/* Bucket of a value, and the value range [lo, hi] a bucket stands for. */
size_t fl_hist_index(uint64_t v);
uint64_t fl_hist_bucket_lo(size_t idx);
uint64_t fl_hist_bucket_hi(size_t idx);

/* The value at quantile q (0..1): the highest value equivalent to the
 * bucket holding the ceil(q*count)-th smallest value, clamped to
 * [min, max]. q <= 0 gives min, q >= 1 gives max. 0 when empty. */
uint64_t fl_hist_quantile(const fl_hist *h, double q);
double fl_hist_mean(const fl_hist *h);

/* Sparse form for pipes and reports: (bucket index, count) pairs of every
 * non-empty bucket, in index order. Returns the number of pairs written
 * (at most max_pairs; *total gets the number needed). */
size_t fl_hist_sparse(const fl_hist *h, uint32_t *idx, uint64_t *cnt,
                      size_t max_pairs, size_t *total);
/* Add sparse pairs (from fl_hist_sparse) plus the exact summary fields.
 * Pairs with an index out of range are ignored. */
void fl_hist_add_sparse(fl_hist *h, const uint32_t *idx, const uint64_t *cnt,
                        size_t n, uint64_t count, uint64_t min, uint64_t max,
                        uint64_t sum);

#endif
