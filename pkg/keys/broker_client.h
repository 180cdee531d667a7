/* SPDX-License-Identifier: Apache-2.0 */
/* The node's side of the key broker ("broker" key provider): a node agent
 * that holds no KEK asks the vtpm-controller's broker to unwrap or wrap a
 * VM's DEK, naming the VM and the launcher pod on this node that runs it.
 * The broker answers only while that launcher runs on the node its token
 * names (agent/broker/broker_server.h; the wire protocol is in README
 * "Keys off the nodes").
 *
 * Authentication is the pod's projected ServiceAccount token with audience
 * BROKER_AUDIENCE, re-read from its file for every request (the kubelet
 * rotates it); TLS 1.3, the broker's certificate verified against ca_file.
 *
 * Errors, as keymgr's callers expect them:
 *   -EHOSTUNREACH  the broker could not be reached, timed out, or said its
 *                  key provider or the API server is unavailable (retry)
 *   -EBADMSG       the key cannot be unwrapped (KEYS_UNWRAP_FAILED)
 *   -EACCES        the broker refused: this node may not have this VM's key
 *   -EPROTO        anything else (a malformed answer, a 4xx/5xx we did not
 *                  expect); messages never carry key material or the token */
#pragma once

#include "base/error.h"
#include "keys/subject.h"
#include "keys/header.h"
#include "keys/secmem.h"

#define BROKER_AUDIENCE "vtpm-controller"

typedef struct broker_client broker_client;

typedef struct broker_client_options {
        const char *url;        /* https://host:port */
        const char *ca_file;
        const char *token_file;
        long timeout_sec;       /* whole request; 0: 15 s */
} broker_client_options;

int broker_client_new(const broker_client_options *o, broker_client **ret, vt_error **err);
void broker_client_free(broker_client *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(broker_client *, broker_client_free)

int broker_client_unwrap(broker_client *b, const key_subject *s, const key_header *entry, secmem **ret_dek,
                         vt_error **err);
/* Sets entry's wrapping fields (provider, kekId, algorithm, wrappedKey,
 * wrappedAt) from the broker's answer; leaves the rest alone. */
int broker_client_wrap(broker_client *b, const key_subject *s, const char *kek_id, const char *version,
                       const secmem *dek, key_header *entry, vt_error **err);
int broker_client_kek_version(broker_client *b, const key_subject *s, const char *version, char **ret_kek_id,
                              vt_error **err);
