/* Input format of fuzz_session (fuzz/SESSION.md). Shared by the target and
 * documented here for the seed generator (fuzz/gen_session_seeds.py, which
 * mirrors these numbers).
 *
 * An input is a sequence of records; each starts with an op byte (taken
 * modulo FS_NOPS) followed by its fields. Fields that run past the end of
 * the input read as 0 / empty, so every byte string is a valid input.
 * u16 fields are little-endian. A slot is one of FS_SLOTS fake remote
 * endpoints (slot byte & 7); ip bytes give the remote 127.0.0.<ip>.
 *
 *   FS_OPEN   slot ip            accept a connection into slot (an
 *                                occupied slot is closed first)
 *   FS_HELLO  slot client dtype  fresh connection + preface + valid HELLO
 *                                of client id fs_client_id(client), device
 *                                type 1 + dtype % 5
 *   FS_BYTES  slot u16 n, bytes  raw bytes on slot
 *   FS_FRAME  slot u16 n, body   varint(n) ++ body (an Envelope body)
 *   FS_LINE   slot u16 n, bytes  bytes ++ "\n" (a legacy JSON line)
 *   FS_EOF    slot               posp2p_peer_conn_eof
 *   FS_CLOSE  slot code          posp2p_peer_conn_closed (code odd: reset)
 *   FS_DGRAM  ip u16 n, bytes    a UDP datagram from 127.0.0.<ip>:8765
 *   FS_TICK   u16 ms             advance the clock by ms and tick; 0xffff:
 *                                jump to the engine's next deadline
 *   FS_ACK    slot k             valid ACK, from the slot's client, of the
 *                                k-th newest message the engine sent there
 *   FS_STALL  slot               toggle draining of slot's output (fills
 *                                queues: backpressure, queue caps)
 *   FS_SEND   kind client        the main POS application sends an
 *                                ORDER_STATUS to client (kind & 1) or
 *                                broadcasts it
 */
#ifndef POSP2P_FUZZ_SESSION_FORMAT_H
#define POSP2P_FUZZ_SESSION_FORMAT_H

enum {
  FS_OPEN = 0,
  FS_HELLO = 1,
  FS_BYTES = 2,
  FS_FRAME = 3,
  FS_LINE = 4,
  FS_EOF = 5,
  FS_CLOSE = 6,
  FS_DGRAM = 7,
  FS_TICK = 8,
  FS_ACK = 9,
  FS_STALL = 10,
  FS_SEND = 11,
  FS_NOPS = 12
};

#define FS_SLOTS 8u
#define FS_TICK_TO_DEADLINE 0xffffu

/* Fake client ids: "cccccccc-0000-4000-8000-0000000000NN" (NN = client in
 * hex, two digits). The main POS under test is FS_MAIN_ID. */
#define FS_CLIENT_ID_FMT "cccccccc-0000-4000-8000-0000000000%02x"
#define FS_MAIN_ID "aaaaaaaa-0000-4000-8000-000000000001"

#endif /* POSP2P_FUZZ_SESSION_FORMAT_H */
