/* ptest: the tiny unit-test harness shared by every C test in posp2p.
 *
 *   PTEST(name) { PT_CHECK(x == 1); PT_EQ_INT(a, b); PT_EQ_STR(s, "x"); }
 *   int main(int argc, char **argv) { return ptest_main(argc, argv); }
 *
 * Each test registers itself with a constructor, so a test file is just a
 * list of PTEST bodies. A failed check prints file:line and the values and
 * fails the test without stopping the others; the process exits non-zero
 * if any test failed and prints "N passed, N failed" as its last line.
 * Run one test with `./test_x name`. */
#ifndef POSP2P_PTEST_H
#define POSP2P_PTEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*ptest_fn)(void);
typedef struct {
  const char *name;
  ptest_fn fn;
} ptest_case;

#define PTEST_MAX 512
static ptest_case ptest_cases[PTEST_MAX];
static int ptest_ncases;
static int ptest_failed_checks;

static inline void ptest_register(const char *name, ptest_fn fn) {
  if (ptest_ncases < PTEST_MAX) {
    ptest_cases[ptest_ncases].name = name;
    ptest_cases[ptest_ncases].fn = fn;
    ptest_ncases++;
  }
}

#define PTEST(name)                                                  \
  static void ptest_##name(void);                                    \
  __attribute__((constructor)) static void ptest_reg_##name(void) {  \
    ptest_register(#name, ptest_##name);                             \
  }                                                                  \
  static void ptest_##name(void)

#define PT_FAIL_(...)                                            \
  do {                                                           \
    fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);            \
    fprintf(stderr, __VA_ARGS__);                                \
    fputc('\n', stderr);                                         \
    ptest_failed_checks++;                                       \
  } while (0)

#define PT_CHECK(cond)                                           \
  do {                                                           \
    if (!(cond)) PT_FAIL_("check failed: %s", #cond);            \
  } while (0)

#define PT_EQ_INT(a, b)                                                   \
  do {                                                                    \
    long long pt_a_ = (long long)(a), pt_b_ = (long long)(b);             \
    if (pt_a_ != pt_b_)                                                   \
      PT_FAIL_("%s == %s: %lld != %lld", #a, #b, pt_a_, pt_b_);           \
  } while (0)

#define PT_EQ_STR(a, b)                                                   \
  do {                                                                    \
    const char *pt_a_ = (a), *pt_b_ = (b);                                \
    if (pt_a_ == NULL || pt_b_ == NULL || strcmp(pt_a_, pt_b_) != 0)      \
      PT_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b,                      \
               pt_a_ ? pt_a_ : "(null)", pt_b_ ? pt_b_ : "(null)");       \
  } while (0)

#define PT_EQ_MEM(a, b, n)                                                \
  do {                                                                    \
    if (memcmp((a), (b), (n)) != 0) PT_FAIL_("%s == %s (%zu bytes)", #a, #b, (size_t)(n)); \
  } while (0)

static inline int ptest_main(int argc, char **argv) {
  int passed = 0, failed = 0;
  for (int i = 0; i < ptest_ncases; i++) {
    if (argc > 1 && strcmp(argv[1], ptest_cases[i].name) != 0) continue;
    int before = ptest_failed_checks;
    ptest_cases[i].fn();
    if (ptest_failed_checks == before) {
      passed++;
    } else {
      failed++;
      fprintf(stderr, "FAIL %s\n", ptest_cases[i].name);
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 && passed > 0 ? 0 : 1;
}

#endif /* POSP2P_PTEST_H */
