/* The fleet plan: every device of the run, its role, id, address, worker
 * process and namespace, computed once before the workers fork so that
 * every process agrees on it. Device ids are derived from the seed, so a
 * device id or an address names the same device in every process. */
#ifndef FL_PLAN_H
#define FL_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "kmap.h"

#define FL_NO_DEV UINT32_MAX

typedef struct {
  uint32_t idx;
  int role;
  uint32_t role_idx;
  char id[37];
  uint8_t idb[16];
  uint32_t ip;      /* host order */
  int worker;       /* -1: external (target mode) */
  int ns;           /* namespace index, -1 in loopback mode */
  bool store;       /* keeps a memory store (survives kills) */
  char name[32];    /* "tablet-17" */
} fl_pdev;

typedef struct {
  const fl_config *cfg;
  fl_pdev *dev;
  uint32_t n;          /* fleet devices (the external main, if any, is dev[n]) */
  uint32_t first[FL_NROLES], count[FL_NROLES];
  uint32_t main_idx;   /* in the fleet or external; FL_NO_DEV if unknown */
  bool main_external;
  int nworkers;        /* worker processes, 0 = in-process */
  int nns;             /* namespaces (netns mode) */
  uint8_t *fault_mask[FL_MAX_FAULTS]; /* per fault: 1 byte per device */
  fl_kmap by_id;       /* uuid -> idx + 1 (as a pointer-sized integer) */
  fl_kmap by_ip;       /* ip -> idx + 1 */
} fl_plan;

/* Build the plan. workers: the resolved worker count (0 = in-process).
 * Returns 0 or -1 (out of memory). */
int fl_plan_build(fl_plan *p, const fl_config *c, int workers);
void fl_plan_free(fl_plan *p);

/* Device index by id text / binary / address; FL_NO_DEV if unknown. */
uint32_t fl_plan_by_id(const fl_plan *p, const char *id);
uint32_t fl_plan_by_idb(const fl_plan *p, const uint8_t idb[16]);
uint32_t fl_plan_by_ip(const fl_plan *p, uint32_t ip);
/* Record the external main POS's id once it is known (target mode). */
void fl_plan_set_external_id(fl_plan *p, const char *id);

bool fl_plan_fault_hits(const fl_plan *p, size_t fault, uint32_t idx);

/* Worker count the auto setting picks for this configuration. */
int fl_plan_auto_workers(const fl_config *c);

/* Deterministic device id from the seed and index. */
void fl_plan_device_id(uint64_t seed, uint32_t idx, uint8_t out[16]);

#endif
