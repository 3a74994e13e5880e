/* Transport utilities: error codes, IPv4 addresses, randomness, the wall
 * clock and the connection map. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "uv_int.h"

/* ---- Errors ---------------------------------------------------------------- */

const char *posp2p_uv_strerror(int code) {
  if (POSP2P_UV_IS_UV_CODE(code)) return uv_strerror(POSP2P_UV_TO_UV(code));
  return posp2p_peer_strerror(code);
}

const char *posp2p_uv_err_name(int code) {
  if (POSP2P_UV_IS_UV_CODE(code)) return uv_err_name(POSP2P_UV_TO_UV(code));
  return posp2p_peer_err_name(code);
}

int posp2p__uv_err_set(posp2p_uv_error *err, int code, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
  }
  return code;
}

int posp2p__uv_close_code(int uv_status) {
  switch (uv_status) {
  case 0:
  case UV_EOF: return 0;
  case UV_ECONNRESET:
  case UV_EPIPE:
  case UV_ECONNABORTED: return POSP2P_ERR_PEER_CLOSED;
  default: return POSP2P_UV_CODE(uv_status);
  }
}

/* ---- Addresses --------------------------------------------------------------- */

int posp2p_uv_ip_parse(const char *text, uint32_t *ip) {
  struct in_addr a;
  if (text == NULL || ip == NULL || inet_pton(AF_INET, text, &a) != 1)
    return POSP2P_ERR_INVAL;
  *ip = ntohl(a.s_addr);
  return 0;
}

void posp2p_uv_ip_format(uint32_t ip, char out[16]) {
  snprintf(out, 16, "%u.%u.%u.%u", (unsigned)(ip >> 24) & 255u,
           (unsigned)(ip >> 16) & 255u, (unsigned)(ip >> 8) & 255u,
           (unsigned)ip & 255u);
}

void posp2p_uv_addr_format(const posp2p_addr *a, char out[22]) {
  char ip[16];
  posp2p_uv_ip_format(a->ip, ip);
  snprintf(out, 22, "%s:%u", ip, (unsigned)a->port);
}

bool posp2p_uv_ip_is_loopback(uint32_t ip) { return (ip >> 24) == 127u; }

void posp2p__uv_sockaddr(struct sockaddr_in *sa, uint32_t ip, uint16_t port) {
  memset(sa, 0, sizeof(*sa));
  sa->sin_family = AF_INET;
  sa->sin_addr.s_addr = htonl(ip);
  sa->sin_port = htons(port);
}

void posp2p__uv_addr_from(posp2p_addr *a, const struct sockaddr *sa) {
  a->ip = 0;
  a->port = 0;
  if (sa != NULL && sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
    a->ip = ntohl(in->sin_addr.s_addr);
    a->port = ntohs(in->sin_port);
  }
}

/* ---- Randomness and wall clock ------------------------------------------------- */

/* Last resort when neither getrandom nor /dev/urandom works (a seccomp'd or
 * chrooted process): a xorshift generator seeded from the clock, the pid
 * and an address. Message ids must stay unique, not secret, so this keeps
 * the process running rather than aborting. */
static void weak_random(uint8_t *buf, size_t len) {
  static uint64_t s;
  if (s == 0)
    s = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&s ^
        0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < len; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    buf[i] = (uint8_t)(s >> 24);
  }
}

void posp2p_uv_random(uint8_t *buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = getrandom(buf + off, len - off, 0);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  if (off == len) return;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    while (off < len) {
      ssize_t n = read(fd, buf + off, len - off);
      if (n > 0) off += (size_t)n;
      else if (n < 0 && errno == EINTR) continue;
      else break;
    }
    close(fd);
  }
  if (off < len) weak_random(buf + off, len - off);
}

void posp2p__uv_ctx_rand(posp2p_uv_ctx *ctx, uint8_t *buf, size_t len) {
  if (len > POSP2P__UV_RND_POOL / 2) {
    posp2p_uv_random(buf, len);
    return;
  }
  if (ctx->rnd_pos + len > POSP2P__UV_RND_POOL) {
    posp2p_uv_random(ctx->rnd, POSP2P__UV_RND_POOL);
    ctx->rnd_pos = 0;
  }
  memcpy(buf, ctx->rnd + ctx->rnd_pos, len);
  /* Never hand out the same bytes twice. */
  memset(ctx->rnd + ctx->rnd_pos, 0, len);
  ctx->rnd_pos += len;
}

uint64_t posp2p_uv_wall_ms(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- Connection map ----------------------------------------------------------- */

static size_t slot_of(posp2p_conn_id id, size_t cap) {
  return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static int map_grow(posp2p__uv_connmap *m) {
  size_t ncap = m->cap ? m->cap * 2 : 8;
  posp2p__uv_conn **ns = POSP2P__UV_CALLOC(ncap * sizeof(*ns));
  if (ns == NULL) return POSP2P_ERR_NOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    posp2p__uv_conn *c = m->slots[i];
    if (c == NULL) continue;
    size_t j = slot_of(c->id, ncap);
    while (ns[j] != NULL) j = (j + 1) & (ncap - 1);
    ns[j] = c;
  }
  POSP2P__UV_FREE(m->slots);
  m->slots = ns;
  m->cap = ncap;
  return 0;
}

int posp2p__uv_connmap_put(posp2p__uv_connmap *m, posp2p__uv_conn *c) {
  if ((m->count + 1) * 10 > m->cap * 7) {
    int r = map_grow(m);
    if (r < 0) return r;
  }
  size_t j = slot_of(c->id, m->cap);
  while (m->slots[j] != NULL) {
    if (m->slots[j]->id == c->id) {
      m->slots[j] = c;
      return 0;
    }
    j = (j + 1) & (m->cap - 1);
  }
  m->slots[j] = c;
  m->count++;
  return 0;
}

posp2p__uv_conn *posp2p__uv_connmap_get(const posp2p__uv_connmap *m,
                                        posp2p_conn_id id) {
  if (m->cap == 0) return NULL;
  size_t j = slot_of(id, m->cap);
  while (m->slots[j] != NULL) {
    if (m->slots[j]->id == id) return m->slots[j];
    j = (j + 1) & (m->cap - 1);
  }
  return NULL;
}

void posp2p__uv_connmap_del(posp2p__uv_connmap *m, posp2p_conn_id id) {
  if (m->cap == 0) return;
  size_t mask = m->cap - 1, j = slot_of(id, m->cap);
  while (m->slots[j] != NULL && m->slots[j]->id != id) j = (j + 1) & mask;
  if (m->slots[j] == NULL) return;
  m->slots[j] = NULL;
  m->count--;
  /* Backward shift: move later entries of the probe run into the hole when
   * their home slot does not lie cyclically in (hole, k]. */
  size_t hole = j, k = (j + 1) & mask;
  while (m->slots[k] != NULL) {
    size_t home = slot_of(m->slots[k]->id, m->cap);
    bool stays = hole <= k ? (home > hole && home <= k)
                           : (home > hole || home <= k);
    if (!stays) {
      m->slots[hole] = m->slots[k];
      m->slots[k] = NULL;
      hole = k;
    }
    k = (k + 1) & mask;
  }
}

void posp2p__uv_connmap_free(posp2p__uv_connmap *m) {
  POSP2P__UV_FREE(m->slots);
  m->slots = NULL;
  m->cap = m->count = 0;
}
