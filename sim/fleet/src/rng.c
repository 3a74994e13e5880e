#include "rng.h"

#include <math.h>

uint64_t fl_splitmix64(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

void fl_rng_seed(fl_rng *r, uint64_t seed, uint64_t stream, uint64_t sub) {
  /* Mix the three inputs so that nearby (seed, stream) pairs give
   * unrelated states. */
  uint64_t st = seed;
  uint64_t a = fl_splitmix64(&st);
  st = a ^ (stream * UINT64_C(0xD1B54A32D192ED03));
  uint64_t b = fl_splitmix64(&st);
  st = b ^ (sub * UINT64_C(0x8CB92BA72F3D8DD7));
  for (int i = 0; i < 4; i++) r->s[i] = fl_splitmix64(&st);
  if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) r->s[0] = 1;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t fl_rng_u64(fl_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double fl_rng_unit(fl_rng *r) {
  return (double)(fl_rng_u64(r) >> 11) * 0x1.0p-53;
}

uint64_t fl_rng_range(fl_rng *r, uint64_t lo, uint64_t hi) {
  if (hi <= lo) return lo;
  uint64_t span = hi - lo + 1;
  if (span == 0) return fl_rng_u64(r); /* full 64-bit range */
  /* Rejection keeps the result unbiased. */
  uint64_t limit = UINT64_MAX - UINT64_MAX % span;
  uint64_t x;
  do x = fl_rng_u64(r);
  while (x >= limit);
  return lo + x % span;
}

double fl_rng_exp(fl_rng *r, double rate) {
  double u = fl_rng_unit(r);
  /* 1 - u is in (0, 1], so the log is finite. */
  return -log(1.0 - u) / rate;
}

int fl_rng_chance(fl_rng *r, double p) {
  if (p <= 0.0) return 0;
  if (p >= 1.0) return 1;
  return fl_rng_unit(r) < p;
}

double fl_poisson_next(fl_rng *r, double t_s, double end_s, double base,
                       double max_factor, fl_rate_fn factor, const void *ctx) {
  if (!(base > 0.0) || !(max_factor > 0.0)) return end_s;
  double lambda = base * max_factor;
  double t = t_s;
  for (;;) {
    t += fl_rng_exp(r, lambda);
    if (t >= end_s) return end_s;
    double f = factor ? factor(t, ctx) : 1.0;
    if (f <= 0.0) continue;
    if (f >= max_factor || fl_rng_unit(r) * max_factor < f) return t;
  }
}
