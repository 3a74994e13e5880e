#include "report.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <jansson.h>

#include "posp2p/peer.h"

static const char *disc_name(fl_disc_mode m) {
  switch (m) {
  case FL_DISC_ANNOUNCE: return "announce";
  case FL_DISC_REQUEST: return "request";
  case FL_DISC_NONE: return "none";
  default: return "auto";
  }
}

static void ipfmt(uint32_t ip, char out[16]) {
  snprintf(out, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255u, (ip >> 8) & 255u, ip & 255u);
}

static double ms(uint64_t us) { return (double)us / 1000.0; }

/* ---- Human summary ---------------------------------------------------------------- */

static void line_hist(FILE *o, const char *name, const fl_hist *h) {
  if (h->count == 0) {
    fprintf(o, "  %-17s (none)\n", name);
    return;
  }
  fprintf(o,
          "  %-17s n=%-8" PRIu64 " p50 %8.2f  p90 %8.2f  p99 %8.2f  p99.9 %8.2f  "
          "p99.99 %8.2f  max %8.2f ms\n",
          name, h->count, ms(fl_hist_quantile(h, 0.5)), ms(fl_hist_quantile(h, 0.9)),
          ms(fl_hist_quantile(h, 0.99)), ms(fl_hist_quantile(h, 0.999)),
          ms(fl_hist_quantile(h, 0.9999)), ms(h->max));
}

void fl_report_summary(const fl_report_in *in, FILE *o) {
  const fl_config *c = in->cfg;
  const fl_agg *a = in->agg;
  uint64_t (*C)(const fl_agg *, int) = fl_agg_counter;
  uint32_t total = fl_config_total(c);
  fprintf(o, "\nposp2p-sim: %s (seed %" PRIu64 ")%s%s\n", c->name, c->seed,
          c->source[0] ? " from " : "", c->source);
  fprintf(o, "  fleet      %u devices: %u main POS, %u tablets, %u secondary POS, %u KDS, "
             "%u displays%s\n",
          total, c->n[FL_ROLE_MAIN], c->n[FL_ROLE_TABLET], c->n[FL_ROLE_SECONDARY],
          c->n[FL_ROLE_KDS], c->n[FL_ROLE_DISPLAY],
          c->has_target ? " + the target main POS" : "");
  char tgt[40] = "";
  if (c->has_target) {
    char ip[16];
    ipfmt(c->target_ip, ip);
    snprintf(tgt, sizeof(tgt), ", target %s:%u", ip, c->target_port);
  }
  fprintf(o, "  mode       %s, %d worker process%s%s, discovery %s\n",
          c->mode == FL_MODE_NETNS ? "network namespaces" : "loopback", in->workers,
          in->workers == 1 ? "" : "es", tgt, disc_name(c->discovery));
  char cbuf[32] = "never";
  if (in->all_connected_ms >= 0)
    snprintf(cbuf, sizeof(cbuf), "%.2fs", (double)in->all_connected_ms / 1000.0);
  fprintf(o, "  time       traffic %.1fs, shutdown at %.1fs (%s), wall %.1fs, cpu %.1fs; all "
             "clients connected at %s\n",
          (double)in->traffic_end_ms / 1000.0, (double)in->shutdown_ms / 1000.0,
          in->watchdog ? "WATCHDOG" : in->drained ? "drained" : "drain limit", in->elapsed_s,
          in->cpu_s, cbuf);
  fprintf(o, "  orders     %" PRIu64 " sent, %" PRIu64 " acked, %" PRIu64 " failed, %" PRIu64
             " refused, %" PRIu64 " cancelled; %" PRIu64 " lifecycles completed, %" PRIu64
             " cancelled, %" PRIu64 " still open\n",
          C(a, FL_C_orders_sent), C(a, FL_C_orders_acked), C(a, FL_C_orders_failed),
          C(a, FL_C_orders_refused), C(a, FL_C_cancels_sent), C(a, FL_C_lifecycles_completed),
          C(a, FL_C_lifecycles_cancelled), fl_agg_gauge(a, FL_G_lifecycles_open));
  fprintf(o, "  messages   %" PRIu64 " sent, %" PRIu64 " acked, %" PRIu64 " failed; %" PRIu64
             " statuses delivered, %" PRIu64 " carts; %" PRIu64 " retransmissions, %" PRIu64
             " duplicates suppressed\n",
          C(a, FL_C_msgs_sent), C(a, FL_C_msgs_acked), C(a, FL_C_msgs_failed),
          C(a, FL_C_statuses_delivered), C(a, FL_C_carts_sent), C(a, FL_C_retransmissions),
          C(a, FL_C_duplicates_suppressed));
  fprintf(o, "  links      %" PRIu64 " handshakes, %" PRIu64 " closed, %" PRIu64
             " timeouts, %" PRIu64 " backpressure, %" PRIu64 " kills, %" PRIu64 " restarts\n",
          C(a, FL_C_conn_ready), C(a, FL_C_conn_closed), C(a, FL_C_device_timeouts),
          C(a, FL_C_backpressure), C(a, FL_C_kills), C(a, FL_C_restarts));
  if (c->nfaults > 0)
    fprintf(o, "  faults     frames dropped %" PRIu64 ", duplicated %" PRIu64 ", delayed %" PRIu64
               ", reordered %" PRIu64 "; bytes held %" PRIu64 "; datagrams dropped %" PRIu64
               "\n",
            C(a, FL_C_fault_frames_dropped), C(a, FL_C_fault_frames_duplicated),
            C(a, FL_C_fault_frames_delayed), C(a, FL_C_fault_frames_reordered),
            C(a, FL_C_fault_bytes_gated), C(a, FL_C_fault_datagrams_dropped));
  fprintf(o, "  latency (from the intended send time)\n");
  line_hist(o, "order acked", fl_agg_hist(a, FL_H_order_ack));
  line_hist(o, "order at kitchen", fl_agg_hist(a, FL_H_order_to_kitchen));
  line_hist(o, "status delivered", fl_agg_hist(a, FL_H_status));
  line_hist(o, "cart acked", fl_agg_hist(a, FL_H_cart_ack));
  line_hist(o, "any message acked", fl_agg_hist(a, FL_H_message_ack));
  line_hist(o, "connect", fl_agg_hist(a, FL_H_connect));
  line_hist(o, "reconnect", fl_agg_hist(a, FL_H_reconnect));
  uint64_t rss = fl_agg_gauge_peak(a, FL_G_rss_kb);
  fprintf(o, "  resources  peak RSS %.1f MiB in workers (%.1f KiB per device), engine memory "
             "%.1f KiB per device, most fds in one process %" PRIu64 "\n",
          (double)rss / 1024.0, total ? (double)rss / total : 0.0,
          total ? (double)fl_agg_gauge_peak(a, FL_G_engine_bytes) / 1024.0 / total : 0.0,
          fl_agg_worker_peak(a, FL_G_fds));
  const fl_check_summary *s = fl_checker_summary(in->chk);
  fprintf(o, "  checker    %" PRIu64 " messages, %" PRIu64 " deliveries, %" PRIu64
             " acks, %" PRIu64 " failures reported, %" PRIu64 " stale statuses, %" PRIu64
             " abandoned (sender down), %" PRIu64 " in flight at the end\n",
          s->messages, s->delivered, s->acked, s->failed, s->stale, s->abandoned, s->in_flight);
  for (size_t i = 0; i < in->nnotes; i++) fprintf(o, "  note       %s\n", in->notes[i]);
  size_t nv = fl_checker_count(in->chk);
  if (fl_checker_warnings(in->chk) > 0)
    fprintf(o, "  warnings   %" PRIu64 " protocol events between fleet devices (expected "
               "under faults), e.g. %s\n",
            s->protocol_events, fl_checker_warning_at(in->chk, 0)->text);
  if (in->exit_code == 3)
    fprintf(o, "  result     RUN FAILED (%s): the results are incomplete\n",
            in->watchdog ? "watchdog" : "see the errors above");
  if (nv == 0) {
    fprintf(o, "  result     0 violations\n");
  } else {
    fprintf(o, "  result     %zu VIOLATION%s:", nv, nv == 1 ? "" : "S");
    for (int k = 0; k < FL_V_NKINDS; k++) {
      size_t n = fl_checker_count_kind(in->chk, (fl_vkind)k);
      if (n) fprintf(o, " %s %zu", fl_vkind_name((fl_vkind)k), n);
    }
    fputc('\n', o);
    size_t show = fl_checker_listed(in->chk);
    if (show > 20) show = 20;
    for (size_t i = 0; i < show; i++) {
      const fl_violation *v = fl_checker_at(in->chk, i);
      fprintf(o, "    - [%s]%s%s%s%s %s\n", fl_vkind_name(v->kind), v->order[0] ? " order " : "",
              v->order, v->mid[0] ? " message " : "", v->mid, v->text);
    }
    if (nv > show) fprintf(o, "    ... %zu more in the JSON report\n", nv - show);
  }
}

/* ---- JSON ------------------------------------------------------------------------------ */

static json_t *hist_json(const fl_hist *h) {
  json_t *o = json_object();
  json_object_set_new(o, "count", json_integer((json_int_t)h->count));
  if (h->count > 0) {
    json_object_set_new(o, "min", json_integer((json_int_t)h->min));
    json_object_set_new(o, "mean", json_real(fl_hist_mean(h)));
    json_object_set_new(o, "p50", json_integer((json_int_t)fl_hist_quantile(h, 0.5)));
    json_object_set_new(o, "p90", json_integer((json_int_t)fl_hist_quantile(h, 0.9)));
    json_object_set_new(o, "p99", json_integer((json_int_t)fl_hist_quantile(h, 0.99)));
    json_object_set_new(o, "p99_9", json_integer((json_int_t)fl_hist_quantile(h, 0.999)));
    json_object_set_new(o, "p99_99", json_integer((json_int_t)fl_hist_quantile(h, 0.9999)));
    json_object_set_new(o, "max", json_integer((json_int_t)h->max));
  }
  /* Non-empty buckets as [low, high, count] (microseconds): enough to
   * merge reports or redraw the distribution. */
  json_t *b = json_array();
  for (size_t i = 0; i < FL_HIST_NBUCKETS; i++) {
    if (h->counts[i] == 0) continue;
    json_t *e = json_array();
    json_array_append_new(e, json_integer((json_int_t)fl_hist_bucket_lo(i)));
    json_array_append_new(e, json_integer((json_int_t)fl_hist_bucket_hi(i)));
    json_array_append_new(e, json_integer((json_int_t)h->counts[i]));
    json_array_append_new(b, e);
  }
  json_object_set_new(o, "buckets", b);
  return o;
}

static json_t *config_json(const fl_config *c, const fl_plan *p) {
  char ip[16];
  json_t *o = json_object();
  json_object_set_new(o, "name", json_string(c->name));
  json_object_set_new(o, "scenario", json_string(c->source));
  json_object_set_new(o, "seed", json_integer((json_int_t)c->seed));
  json_object_set_new(o, "duration_ms", json_integer((json_int_t)c->duration_ms));
  json_object_set_new(o, "drain_ms", json_integer((json_int_t)c->drain_ms));
  json_object_set_new(o, "max_duration_ms", json_integer((json_int_t)c->max_duration_ms));
  json_t *f = json_object();
  for (int r = 1; r < FL_NROLES; r++)
    json_object_set_new(f, fl_role_name(r), json_integer(c->n[r]));
  json_object_set_new(o, "fleet", f);
  json_object_set_new(o, "mode", json_string(c->mode == FL_MODE_NETNS ? "netns" : "loopback"));
  if (c->mode == FL_MODE_NETNS) {
    json_object_set_new(o, "namespaces", json_integer(c->namespaces));
    ipfmt(c->subnet, ip);
    json_object_set_new(o, "subnet", json_string(ip));
  } else {
    ipfmt(c->ip_base, ip);
    json_object_set_new(o, "ip_base", json_string(ip));
  }
  if (c->has_target) {
    char t[40];
    ipfmt(c->target_ip, ip);
    snprintf(t, sizeof(t), "%s:%u", ip, c->target_port);
    json_object_set_new(o, "target", json_string(t));
  }
  json_object_set_new(o, "wire", json_string(c->wire == POSP2P_PEER_WIRE_LEGACY ? "legacy" : "v2"));
  json_object_set_new(o, "discovery", json_string(disc_name(c->discovery)));
  json_object_set_new(o, "discovery_port", json_integer(c->disc_port));
  json_object_set_new(o, "data_port", json_integer(c->data_port));
  json_object_set_new(o, "workers", json_integer(p->nworkers));
  json_t *t = json_object();
  json_object_set_new(t, "heartbeat_ms", json_integer(c->heartbeat_ms));
  json_object_set_new(t, "device_timeout_ms", json_integer(c->timeout_ms));
  json_object_set_new(t, "ack_timeout_ms", json_integer(c->ack_timeout_ms));
  json_object_set_new(t, "ack_backoff_cap_ms", json_integer(c->backoff_cap_ms));
  json_object_set_new(t, "max_retries", json_integer(c->max_retries));
  json_object_set_new(t, "handshake_ms", json_integer(c->handshake_ms));
  json_object_set_new(t, "announce_ms", json_integer(c->announce_ms));
  json_object_set_new(t, "reconnect_ms", json_integer(c->reconnect_ms));
  json_object_set_new(o, "timers", t);
  json_t *tr = json_object();
  json_object_set_new(tr, "order_rate_per_s", json_real(c->order_rate));
  json_object_set_new(tr, "secondary_order_rate_per_s", json_real(c->secondary_rate));
  json_object_set_new(tr, "cart_rate_per_s", json_real(c->cart_rate));
  json_object_set_new(tr, "cancel_ratio", json_real(c->cancel_ratio));
  json_object_set_new(tr, "order_route", json_string(c->route == FL_ROUTE_KDS ? "kds" : "main"));
  json_object_set_new(tr, "start_ms", json_integer((json_int_t)c->traffic_start_ms));
  json_object_set_new(tr, "ramp_up_ms", json_integer((json_int_t)c->ramp_ms));
  json_object_set_new(o, "traffic", tr);
  json_t *ph = json_array();
  for (size_t i = 0; i < c->nphases; i++) {
    json_t *e = json_object();
    json_object_set_new(e, "name", json_string(c->phases[i].name));
    json_object_set_new(e, "start_ms", json_integer((json_int_t)c->phases[i].start_ms));
    json_object_set_new(e, "end_ms", json_integer((json_int_t)c->phases[i].end_ms));
    json_object_set_new(e, "rate", json_real(c->phases[i].scale));
    json_array_append_new(ph, e);
  }
  json_object_set_new(o, "phases", ph);
  json_t *fa = json_array();
  for (size_t i = 0; i < c->nfaults; i++) {
    const fl_fault *ft = &c->faults[i];
    json_t *e = json_object();
    json_object_set_new(e, "name", json_string(ft->name));
    json_object_set_new(e, "kind", json_string(fl_fault_kind_name(ft->kind)));
    json_object_set_new(e, "devices", json_string(ft->devices.text));
    size_t hit = 0;
    for (uint32_t d = 0; d < p->n; d++) hit += fl_plan_fault_hits(p, i, d);
    json_object_set_new(e, "devices_hit", json_integer((json_int_t)hit));
    json_object_set_new(e, "start_ms", json_integer((json_int_t)ft->start_ms));
    if (ft->end_ms != UINT64_MAX)
      json_object_set_new(e, "end_ms", json_integer((json_int_t)ft->end_ms));
    if (ft->rate > 0) json_object_set_new(e, "rate", json_real(ft->rate));
    if (ft->delay_ms) json_object_set_new(e, "delay_ms", json_integer(ft->delay_ms));
    if (ft->types) {
      json_t *ty = json_array();
      for (int k = 0; k < 64; k++)
        if ((ft->types >> k) & 1u) {
          const char *n = posp2p_message_type_name(k);
          json_array_append_new(ty, json_string(n ? n : "?"));
        }
      json_object_set_new(e, "types", ty);
    }
    json_object_set_new(e, "direction", json_string(fl_dir_name(ft->dir)));
    if (ft->kind == FL_FAULT_KILL || ft->kind == FL_FAULT_MAIN_RESTART) {
      json_object_set_new(e, "mode", json_string(ft->graceful ? "graceful" : "crash"));
      if (ft->restart_after_ms != UINT64_MAX)
        json_object_set_new(e, "restart_after_ms", json_integer((json_int_t)ft->restart_after_ms));
    }
    if (ft->bytes_per_s) json_object_set_new(e, "bytes_per_s", json_integer((json_int_t)ft->bytes_per_s));
    if (ft->netem[0]) json_object_set_new(e, "netem", json_string(ft->netem));
    json_array_append_new(fa, e);
  }
  json_object_set_new(o, "faults", fa);
  return o;
}

static json_t *violation_json(const fl_plan *p, const fl_violation *v) {
  json_t *e = json_object();
  json_object_set_new(e, "kind", json_string(fl_vkind_name(v->kind)));
  json_object_set_new(e, "text", json_string(v->text));
  if (v->order[0]) json_object_set_new(e, "order_id", json_string(v->order));
  if (v->mid[0]) json_object_set_new(e, "message_id", json_string(v->mid));
  if (v->dev != FL_NO_DEV && v->dev <= p->n) {
    json_object_set_new(e, "device", json_string(p->dev[v->dev].name));
    json_object_set_new(e, "device_id", json_string(p->dev[v->dev].id));
  }
  if (v->peer != FL_NO_DEV && v->peer <= p->n) {
    json_object_set_new(e, "peer", json_string(p->dev[v->peer].name));
    json_object_set_new(e, "peer_id", json_string(p->dev[v->peer].id));
  }
  if (v->t_ms) json_object_set_new(e, "t_ms", json_integer((json_int_t)v->t_ms));
  return e;
}

int fl_report_json(const fl_report_in *in, const char *path, char *err, size_t n) {
  const fl_agg *a = in->agg;
  json_t *root = json_object();
  json_object_set_new(root, "tool", json_string("posp2p-sim"));
  json_object_set_new(root, "format", json_integer(1));
  json_object_set_new(root, "started_at_ms", json_integer((json_int_t)in->wall_start_ms));
  json_object_set_new(root, "config", config_json(in->cfg, in->plan));
  size_t nv = fl_checker_count(in->chk);
  json_t *res = json_object();
  json_object_set_new(res, "ok", json_boolean(nv == 0 && in->exit_code == 0));
  json_object_set_new(res, "exit_code", json_integer(in->exit_code));
  json_object_set_new(res, "violations", json_integer((json_int_t)nv));
  json_object_set_new(res, "drained", json_boolean(in->drained));
  json_object_set_new(res, "watchdog", json_boolean(in->watchdog));
  json_object_set_new(res, "traffic_end_ms", json_integer((json_int_t)in->traffic_end_ms));
  json_object_set_new(res, "shutdown_at_ms", json_integer((json_int_t)in->shutdown_ms));
  json_object_set_new(res, "wall_s", json_real(in->elapsed_s));
  json_object_set_new(res, "cpu_s", json_real(in->cpu_s));
  if (in->all_connected_ms >= 0)
    json_object_set_new(res, "all_connected_ms", json_integer((json_int_t)in->all_connected_ms));
  json_t *notes = json_array();
  for (size_t i = 0; i < in->nnotes; i++) json_array_append_new(notes, json_string(in->notes[i]));
  json_object_set_new(res, "notes", notes);
  json_object_set_new(root, "result", res);

  json_t *cnt = json_object();
  for (int i = 0; i < FL_NCOUNTERS; i++)
    json_object_set_new(cnt, fl_counter_names[i], json_integer((json_int_t)fl_agg_counter(a, i)));
  json_object_set_new(root, "counters", cnt);
  json_t *gauges = json_object();
  for (int i = 0; i < FL_NGAUGES; i++) {
    json_t *g = json_object();
    json_object_set_new(g, "end", json_integer((json_int_t)fl_agg_gauge(a, i)));
    json_object_set_new(g, "peak", json_integer((json_int_t)fl_agg_gauge_peak(a, i)));
    json_object_set_new(g, "peak_one_worker", json_integer((json_int_t)fl_agg_worker_peak(a, i)));
    json_object_set_new(gauges, fl_gauge_names[i], g);
  }
  json_object_set_new(root, "gauges", gauges);
  uint32_t total = fl_config_total(in->cfg);
  json_t *resr = json_object();
  uint64_t rss = fl_agg_gauge_peak(a, FL_G_rss_kb);
  json_object_set_new(resr, "devices", json_integer(total));
  json_object_set_new(resr, "peak_rss_kb_workers", json_integer((json_int_t)rss));
  json_object_set_new(resr, "rss_kb_per_device", json_real(total ? (double)rss / total : 0));
  json_object_set_new(resr, "engine_bytes_per_device",
                      json_real(total ? (double)fl_agg_gauge_peak(a, FL_G_engine_bytes) / total : 0));
  json_object_set_new(resr, "parent_rss_kb", json_integer((json_int_t)in->parent_rss_kb));
  json_object_set_new(resr, "max_fds_one_process",
                      json_integer((json_int_t)fl_agg_worker_peak(a, FL_G_fds)));
  json_object_set_new(root, "resources", resr);

  json_t *lat = json_object();
  json_object_set_new(lat, "unit", json_string("us"));
  for (int i = 0; i < FL_NHISTS; i++)
    json_object_set_new(lat, fl_hist_names[i], hist_json(fl_agg_hist(a, i)));
  json_object_set_new(root, "latency", lat);

  json_t *ts = json_object();
  json_t *t_s = json_array(), *conn = json_array(), *up = json_array(), *osent = json_array(),
         *oack = json_array(), *p50 = json_array(), *p99 = json_array(), *pmax = json_array(),
         *errs = json_array(), *retx = json_array(), *rssa = json_array(), *msgs = json_array();
  for (size_t i = 1; i < fl_agg_nsec(a); i++) {
    const fl_sec *s = fl_agg_sec(a, i);
    if (s->reports == 0) continue;
    json_array_append_new(t_s, json_integer((json_int_t)s->t_s));
    json_array_append_new(conn, json_integer((json_int_t)s->g[FL_G_clients_connected]));
    json_array_append_new(up, json_integer((json_int_t)s->g[FL_G_devices_up]));
    json_array_append_new(osent, json_integer((json_int_t)s->c[FL_C_orders_sent]));
    json_array_append_new(oack, json_integer((json_int_t)s->c[FL_C_orders_acked]));
    json_array_append_new(msgs, json_integer((json_int_t)s->c[FL_C_msgs_sent]));
    json_array_append_new(p50, s->ack_count ? json_real((double)s->ack_p50_us / 1000.0) : json_null());
    json_array_append_new(p99, s->ack_count ? json_real((double)s->ack_p99_us / 1000.0) : json_null());
    json_array_append_new(pmax, s->ack_count ? json_real((double)s->ack_max_us / 1000.0) : json_null());
    json_array_append_new(errs, json_integer((json_int_t)(s->c[FL_C_msgs_failed] +
                                                          s->c[FL_C_protocol_violations])));
    json_array_append_new(retx, json_integer((json_int_t)s->c[FL_C_retransmissions]));
    json_array_append_new(rssa, json_integer((json_int_t)s->g[FL_G_rss_kb]));
  }
  json_object_set_new(ts, "t_s", t_s);
  json_object_set_new(ts, "connected", conn);
  json_object_set_new(ts, "devices_up", up);
  json_object_set_new(ts, "orders_sent_per_s", osent);
  json_object_set_new(ts, "orders_acked_per_s", oack);
  json_object_set_new(ts, "messages_sent_per_s", msgs);
  json_object_set_new(ts, "order_ack_p50_ms", p50);
  json_object_set_new(ts, "order_ack_p99_ms", p99);
  json_object_set_new(ts, "order_ack_max_ms", pmax);
  json_object_set_new(ts, "errors_per_s", errs);
  json_object_set_new(ts, "retransmissions_per_s", retx);
  json_object_set_new(ts, "rss_kb", rssa);
  json_object_set_new(root, "timeseries", ts);

  const fl_check_summary *s = fl_checker_summary(in->chk);
  json_t *ck = json_object();
  json_object_set_new(ck, "messages", json_integer((json_int_t)s->messages));
  json_object_set_new(ck, "recipients", json_integer((json_int_t)s->recipients));
  json_object_set_new(ck, "delivered", json_integer((json_int_t)s->delivered));
  json_object_set_new(ck, "acked", json_integer((json_int_t)s->acked));
  json_object_set_new(ck, "failed", json_integer((json_int_t)s->failed));
  json_object_set_new(ck, "stale", json_integer((json_int_t)s->stale));
  json_object_set_new(ck, "abandoned", json_integer((json_int_t)s->abandoned));
  json_object_set_new(ck, "in_flight", json_integer((json_int_t)s->in_flight));
  json_object_set_new(ck, "protocol_events", json_integer((json_int_t)s->protocol_events));
  json_t *byk = json_object();
  for (int k = 0; k < FL_V_NKINDS; k++)
    json_object_set_new(byk, fl_vkind_name((fl_vkind)k),
                        json_integer((json_int_t)fl_checker_count_kind(in->chk, (fl_vkind)k)));
  json_object_set_new(ck, "violations_by_kind", byk);
  json_object_set_new(root, "checker", ck);
  json_t *vl = json_array();
  for (size_t i = 0; i < fl_checker_listed(in->chk); i++)
    json_array_append_new(vl, violation_json(in->plan, fl_checker_at(in->chk, i)));
  json_object_set_new(root, "violations", vl);
  json_t *wl = json_array();
  for (size_t i = 0; i < fl_checker_warnings(in->chk); i++)
    json_array_append_new(wl, violation_json(in->plan, fl_checker_warning_at(in->chk, i)));
  json_object_set_new(root, "warnings", wl);

  int rc = 0;
  if (json_dump_file(root, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER) != 0) {
    snprintf(err, n, "cannot write report %s: %s", path, strerror(errno));
    rc = -1;
  }
  json_decref(root);
  return rc;
}
