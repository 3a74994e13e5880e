/* Seeded pseudo-random numbers (xoshiro256**, seeded through splitmix64)
 * and the open-loop arrival schedule.
 *
 * Every device draws its schedule from its own stream, seeded with
 * (run seed, device index, stream), so the schedule of a device does not
 * depend on how devices are spread over worker processes or on the order
 * in which events happen to be processed. */
#ifndef FL_RNG_H
#define FL_RNG_H

#include <stdint.h>

typedef struct {
  uint64_t s[4];
} fl_rng;

uint64_t fl_splitmix64(uint64_t *state);
void fl_rng_seed(fl_rng *r, uint64_t seed, uint64_t stream, uint64_t sub);
uint64_t fl_rng_u64(fl_rng *r);
/* Uniform in [0, 1). */
double fl_rng_unit(fl_rng *r);
/* Uniform integer in [lo, hi] (lo <= hi). */
uint64_t fl_rng_range(fl_rng *r, uint64_t lo, uint64_t hi);
/* Exponential with the given rate (events per unit), rate > 0. */
double fl_rng_exp(fl_rng *r, double rate);
/* True with probability p. */
int fl_rng_chance(fl_rng *r, double p);

/* A rate function over run time (seconds since the run started):
 * piecewise-linear, given as the factor applied to a base rate. The fleet
 * builds it from the scenario's traffic start, ramp and phases. */
typedef double (*fl_rate_fn)(double t_s, const void *ctx);

/* Next arrival of a non-homogeneous Poisson process after t_s, by thinning
 * (Lewis-Shedler): candidates at rate base*max_factor, each kept with
 * probability factor(t)/max_factor. Returns a time > t_s, or a value
 * >= end_s if no arrival happens before end_s. base <= 0 or max_factor <= 0
 * gives end_s. */
double fl_poisson_next(fl_rng *r, double t_s, double end_s, double base,
                       double max_factor, fl_rate_fn factor, const void *ctx);

#endif
