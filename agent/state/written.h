/* SPDX-License-Identifier: Apache-2.0 */
/* TPMStates as the state controller's own last write returned them, until
 * the informer has caught up. The next reconcile of the same VM (often
 * triggered by that very write) must not judge from an older cached status,
 * or it re-sends the events the status dedups (warnedGeneration, the Ready
 * reason of this generation, RestartRequired). Thread-safe. */
#pragma once

#include <jansson.h>

typedef struct state_written state_written;

state_written *state_written_new(void);
void state_written_free(state_written *w);

/* Remember `ts`, a TPMState the API server returned (its key "ns/vm" is
 * its own namespace and name: a TPMState is named after its VM). */
void state_written_remember(state_written *w, json_t *ts);
void state_written_forget(state_written *w, const char *key);
/* Forget everything (a new term as leader: what we wrote in an earlier one
 * may have been overwritten since). */
void state_written_clear(state_written *w);

/* The VM's TPMState as we know it best: `cached` (the informer's copy,
 * consumed), unless our own last write for the same VM uid is newer. New
 * reference or NULL. */
json_t *state_written_current(state_written *w, const char *key, json_t *cached, const char *vm_uid);

/* TPMStates as cached and remembered: without managedFields, which were
 * most of their size (about 25 KB parsed, each). */
json_t *state_tpmstate_trim(json_t *ts);
