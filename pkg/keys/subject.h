/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Whose key: the VM (its namespace is the KEK scope: one KEK per namespace)
 * and the launcher pod on this node that runs it. The "secret" and "kmip"
 * providers use only the namespace; the "broker" provider sends all three,
 * and the key broker gives the key only while that launcher runs on the
 * asking node. Who fills it in, and from what, is the agent's policy
 * (agent/keymgr.h). */
typedef struct key_subject {
        const char *ns;
        const char *vm;
        const char *launcher_uid;
} key_subject;
