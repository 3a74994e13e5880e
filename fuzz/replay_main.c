/* Replay driver: runs a fuzz target's LLVMFuzzerTestOneInput once on every
 * file given on the command line, or on every file of every directory
 * given, without libFuzzer. Built with any compiler and linked with each
 * target as replay_<target>; ctest runs it over the target's corpus and
 * regressions under ASan+UBSan (OpenSSL's fuzz/test-corpus.c does the same).
 *
 *   replay_<target> [-v] PATH... [--optional PATH...]
 *
 * Paths after --optional may be missing (a target without regressions yet).
 * Directories are read one level deep, in name order, skipping dot files.
 * Prints how many inputs ran; exits 1 if none ran or a path is unreadable.
 * If an input crashes, its path is printed on stderr before the process
 * dies (from a sanitizer death callback or a signal handler). */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Provided by the ASan/UBSan runtimes when linked; weak so that a build
 * without sanitizers still links. */
extern void __sanitizer_set_death_callback(void (*cb)(void))
    __attribute__((weak));

static const char *current_input;

static void say_current(void) {
  if (current_input == NULL)
    return;
  /* write(2) only: this runs from a signal handler too. */
  static const char pre[] = "replay: crash while running ";
  ssize_t r = write(STDERR_FILENO, pre, sizeof(pre) - 1);
  r = write(STDERR_FILENO, current_input, strlen(current_input));
  r = write(STDERR_FILENO, "\n", 1);
  (void)r;
}

static void on_fatal_signal(int sig) {
  say_current();
  signal(sig, SIG_DFL);
  raise(sig);
}

static int read_file(const char *path, uint8_t **data, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return -1;
  size_t cap = 4096, len = 0;
  uint8_t *buf = malloc(cap);
  while (buf != NULL) {
    if (len == cap) {
      uint8_t *nb = realloc(buf, cap * 2);
      if (nb == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0)
      break;
  }
  int bad = buf == NULL || ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return -1;
  }
  *data = buf;
  *size = len;
  return 0;
}

static int verbose;

static int run_file(const char *path, size_t *count) {
  uint8_t *data = NULL;
  size_t size = 0;
  if (read_file(path, &data, &size) != 0) {
    fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
    return -1;
  }
  if (verbose)
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
  current_input = path;
  /* Copy into an exactly-sized buffer so ASan catches a read one past the
   * end, as libFuzzer's own copy would. */
  uint8_t *exact = malloc(size ? size : 1);
  if (exact == NULL) {
    free(data);
    return -1;
  }
  if (size)
    memcpy(exact, data, size);
  free(data);
  LLVMFuzzerTestOneInput(exact, size);
  free(exact);
  current_input = NULL;
  (*count)++;
  return 0;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, size_t *count) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    fprintf(stderr, "replay: cannot open %s: %s\n", dir, strerror(errno));
    return -1;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  struct dirent *ent;
  while ((ent = readdir(d)) != NULL) {
    if (ent->d_name[0] == '.')
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 256;
      char **nn = realloc(names, cap * sizeof(*names));
      if (nn == NULL) {
        rc = -1;
        break;
      }
      names = nn;
    }
    size_t len = strlen(dir) + 1 + strlen(ent->d_name) + 1;
    names[n] = malloc(len);
    if (names[n] == NULL) {
      rc = -1;
      break;
    }
    snprintf(names[n], len, "%s/%s", dir, ent->d_name);
    n++;
  }
  closedir(d);
  if (n > 0)
    qsort(names, n, sizeof(*names), cmp_names);
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (rc == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
      rc = run_file(names[i], count);
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  size_t count = 0;
  int optional = 0, failed = 0;
  signal(SIGILL, on_fatal_signal); /* __builtin_trap() in a target */
  signal(SIGABRT, on_fatal_signal);
  if (__sanitizer_set_death_callback) {
    /* ASan owns SIGSEGV and SIGFPE and reports them; it calls back here. */
    __sanitizer_set_death_callback(say_current);
  } else {
    signal(SIGSEGV, on_fatal_signal);
    signal(SIGFPE, on_fatal_signal);
  }
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--optional") == 0) {
      optional = 1;
      continue;
    }
    if (strcmp(arg, "-v") == 0) {
      verbose = 1;
      continue;
    }
    struct stat st;
    if (stat(arg, &st) != 0) {
      if (optional && errno == ENOENT)
        continue;
      fprintf(stderr, "replay: %s: %s\n", arg, strerror(errno));
      failed = 1;
      continue;
    }
    int rc = S_ISDIR(st.st_mode) ? run_dir(arg, &count) : run_file(arg, &count);
    if (rc != 0)
      failed = 1;
  }
  printf("%s: ran %zu inputs\n", argc > 0 ? argv[0] : "replay", count);
  if (count == 0) {
    fprintf(stderr, "replay: no inputs ran\n");
    return 1;
  }
  return failed;
}
