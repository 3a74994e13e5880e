/* Compile-time mutation hooks for the conformance suite's mutation tests
 * (conformance/CMakeLists.txt builds posp2p-peer-mutant-<name> with
 * -DPOSP2P_MUTANT_<name>=1). POSP2P_MUTANT(name) is 0 in every normal
 * build, so each hook is a constant-false condition the compiler removes.
 * Every name used in the engine must be listed here (a misspelt one fails
 * to compile). */
#ifndef POSP2P_MUTANT_H
#define POSP2P_MUTANT_H

#ifndef POSP2P_MUTANT_no_ack
#define POSP2P_MUTANT_no_ack 0
#endif
#ifndef POSP2P_MUTANT_late_heartbeat
#define POSP2P_MUTANT_late_heartbeat 0
#endif
#ifndef POSP2P_MUTANT_no_dedup
#define POSP2P_MUTANT_no_dedup 0
#endif
#ifndef POSP2P_MUTANT_misroute
#define POSP2P_MUTANT_misroute 0
#endif
#ifndef POSP2P_MUTANT_no_disc_response
#define POSP2P_MUTANT_no_disc_response 0
#endif
#ifndef POSP2P_MUTANT_split_frame
#define POSP2P_MUTANT_split_frame 0
#endif
#ifndef POSP2P_MUTANT_ignore_max_frame
#define POSP2P_MUTANT_ignore_max_frame 0
#endif
#ifndef POSP2P_MUTANT_no_retransmit
#define POSP2P_MUTANT_no_retransmit 0
#endif
#ifndef POSP2P_MUTANT_bad_version
#define POSP2P_MUTANT_bad_version 0
#endif
#ifndef POSP2P_MUTANT_error_loop
#define POSP2P_MUTANT_error_loop 0
#endif
#ifndef POSP2P_MUTANT_own_datagrams
#define POSP2P_MUTANT_own_datagrams 0
#endif
#ifndef POSP2P_MUTANT_no_handshake_deadline
#define POSP2P_MUTANT_no_handshake_deadline 0
#endif

/* Not a conformance mutant: the live fuzzer's own target (fuzz/CMakeLists.txt,
 * test_livefuzz.py). After one oversize frame the device still accepts TCP
 * connections but never answers a preface again: a wedged device. */
#ifndef POSP2P_MUTANT_wedge_on_oversize
#define POSP2P_MUTANT_wedge_on_oversize 0
#endif

#define POSP2P_MUTANT(name) (POSP2P_MUTANT_##name)

#endif /* POSP2P_MUTANT_H */
