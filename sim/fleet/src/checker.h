/* The correctness checker. Workers turn engine events into records (a
 * message was sent, acknowledged, failed, delivered); the checker, which
 * sees the records of every device, checks at the end of the run that
 *   - every message a fleet device sent was delivered at most once to each
 *     recipient, and that each intended recipient either delivered it (and
 *     the sender saw the acknowledgement) or the sender was told it failed
 *     (DELIVERY_FAILED); nothing is acknowledged without being delivered;
 *   - order status updates were delivered in order per (recipient,
 *     originator, order): sequence numbers strictly increasing, lifecycle
 *     never going backwards;
 * and collects the violations that workers detect themselves (a silent
 * device not marked disconnected within the timeout, a timeout fired too
 * early). Records of one device arrive in the order they happened; records
 * of different devices may arrive in any order, so message checks wait for
 * the end. */
#ifndef FL_CHECKER_H
#define FL_CHECKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plan.h"

enum {
  FL_REC_SEND = 1,  /* dev sent mid to peer (FL_NO_DEV: by type) */
  FL_REC_ACK,       /* dev got peer's acknowledgement of mid */
  FL_REC_FAIL,      /* dev was told mid failed for peer */
  FL_REC_DELIVER,   /* dev delivered mid, originated by peer */
  FL_REC_STALE,     /* dev acked but did not deliver mid (old status) */
  FL_REC_DOWN,      /* dev went down (killed) */
  FL_REC_UP,        /* dev came back */
  FL_REC_IGNORE     /* dev's application dropped delivered mid (test fault) */
};

enum {
  FL_RF_BYTYPE = 1,   /* SEND: by type (or broadcast), recipients unknown */
  FL_RF_CUSTODY = 2,  /* ACK/FAIL: reported by the main POS as custodian */
  FL_RF_CLIENT = 4,   /* SEND: by type from a client: the main POS acks */
  FL_RF_ABANDON = 8   /* FAIL: the sender gave up locally (e.g. shut down) */
};

typedef struct {
  uint8_t kind, mtype, status, flags;
  uint32_t dev;   /* device where it happened */
  uint32_t peer;  /* recipient (SEND/ACK/FAIL) or originator (DELIVER) */
  uint64_t order; /* order key, 0 if none */
  uint64_t seq;   /* OrderStatus.sequence */
  uint64_t t_ms;  /* run time */
  uint8_t mid[16];
} fl_rec;

typedef enum {
  FL_V_DUPLICATE = 0,
  FL_V_LOST,
  FL_V_UNRESOLVED,
  FL_V_OUT_OF_ORDER,
  FL_V_MISROUTED,
  FL_V_PHANTOM,
  FL_V_ID_REUSED,
  FL_V_NOT_DISCONNECTED,
  FL_V_EARLY_TIMEOUT,
  FL_V_PROTOCOL,
  FL_V_NKINDS
} fl_vkind;

typedef struct {
  fl_vkind kind;
  char text[320];
  char mid[37];      /* "" if not about a message */
  char order[32];    /* "" if none */
  uint32_t dev, peer;
  uint64_t t_ms;
} fl_violation;

typedef struct {
  uint64_t messages, recipients;
  uint64_t delivered, acked, failed, stale;
  uint64_t abandoned;      /* sender or tracker down at the end */
  uint64_t in_flight;      /* unresolved but sent too late to be resolved */
  uint64_t protocol_events;/* engine VIOLATION events (warnings in fault runs) */
} fl_check_summary;

typedef struct fl_checker fl_checker;

/* protocol_is_violation: count engine protocol-violation events as
 * violations (runs without faults) rather than warnings. */
fl_checker *fl_checker_new(const fl_plan *plan, uint32_t max_listed,
                           bool protocol_is_violation);
void fl_checker_free(fl_checker *c);
void fl_checker_add(fl_checker *c, const fl_rec *r);
/* A violation found elsewhere (a worker). */
void fl_checker_report(fl_checker *c, fl_vkind kind, uint32_t dev, uint32_t peer,
                       uint64_t t_ms, const char *text);
/* Messages first sent later than t_end_ms - window_ms (run time) that are
 * still unresolved at the end count as in flight, not as violations: the
 * window is the retransmission schedule, after which the engine must have
 * reported the outcome. */
void fl_checker_set_window(fl_checker *c, uint64_t t_end_ms, uint64_t window_ms);
/* Evaluate the message checks; call once, after the last record. */
void fl_checker_finish(fl_checker *c);

size_t fl_checker_count(const fl_checker *c);           /* all violations */
size_t fl_checker_count_kind(const fl_checker *c, fl_vkind k);
size_t fl_checker_listed(const fl_checker *c);          /* kept in detail */
const fl_violation *fl_checker_at(const fl_checker *c, size_t i);
const fl_check_summary *fl_checker_summary(const fl_checker *c);
/* Protocol warnings (kept when protocol events are not violations). */
size_t fl_checker_warnings(const fl_checker *c);
const fl_violation *fl_checker_warning_at(const fl_checker *c, size_t i);

const char *fl_vkind_name(fl_vkind k);

/* Order keys: (originating device index, per-device number). */
uint64_t fl_order_key(uint32_t dev, uint32_t n);
void fl_order_text(uint64_t key, char out[32]);

#endif
