/* Worker <-> parent messages over a socketpair, on both sides a uv_pipe.
 * Frames: u32 length (of type + payload), u8 type, payload. Records are
 * sent as raw fl_rec arrays (both ends are the same executable). */
#ifndef FL_IPC_H
#define FL_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "fleet.h"

enum { FL_CMD_SHUTDOWN = 1, FL_CMD_ABORT = 2 };

/* Worker side: a sink that writes to the pipe. */
typedef struct fl_ipc_w fl_ipc_w;
fl_ipc_w *fl_ipc_w_new(uv_loop_t *loop, int fd, void (*on_cmd)(int cmd, void *ud), void *ud);
fl_sink fl_ipc_w_sink(fl_ipc_w *w);
/* Flush pending writes, then close; on_closed when done. */
void fl_ipc_w_close(fl_ipc_w *w, void (*on_closed)(void *ud));
void fl_ipc_w_free(fl_ipc_w *w);

/* Parent side: decodes frames into a sink. on_eof when the worker's end
 * closes. */
typedef struct fl_ipc_r fl_ipc_r;
fl_ipc_r *fl_ipc_r_new(uv_loop_t *loop, int fd, const fl_sink *sink,
                       void (*on_eof)(fl_ipc_r *r, void *ud), void *ud);
void fl_ipc_r_send_cmd(fl_ipc_r *r, int cmd);
void fl_ipc_r_close(fl_ipc_r *r);
void fl_ipc_r_free(fl_ipc_r *r);

#endif
