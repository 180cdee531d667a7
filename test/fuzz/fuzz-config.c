/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the agent's configuration parser (agent_config_parse).
 * The configuration comes from a ConfigMap an operator (not a tenant) writes,
 * but a typo in it must end in a clear error at start, never in a crash or a
 * half-filled configuration the daemon then runs with.
 *
 * Checks besides ASan/UBSan: the documented results (0 with *ret set and no
 * error, or a negative errno with a message and *ret untouched); an accepted
 * configuration has every string the daemon dereferences set, positive worker
 * counts and size, a key provider it knows with what it needs (the
 * broker's URL, CA and token; a broker's TLS files), (http.listen may be unset:
 * "" disables the endpoint); the size floor per storage
 * class is never below state.size. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const agent_config *c) {
        if (!c->namespace || !*c->namespace || !c->node.kubelet_root || !c->node.swtpm_state_dir ||
            !c->node.swtpm_user || !c->node.run_dir || !c->node.attachment_image || !c->keys.provider ||
            !c->log.level || !c->log.format)
                abort();
        bool broker = strcmp(c->keys.provider, "broker") == 0;
        if (strcmp(c->keys.provider, "secret") != 0 && strcmp(c->keys.provider, "kmip") != 0 && !broker)
                abort();
        /* The node side of the key broker: all three, https only. */
        if (broker && (!c->keys.broker_url || strncmp(c->keys.broker_url, "https://", 8) != 0 ||
                       !c->keys.broker_ca_file || !c->keys.broker_token_file))
                abort();
        /* The broker itself: TLS files, and it holds the KEKs. */
        if (c->broker.listen && (!c->broker.cert_file || !c->broker.key_file || broker))
                abort();
        if (!c->broker.agent_service_account || !*c->broker.agent_service_account || !c->broker.agent_daemonset ||
            !*c->broker.agent_daemonset)
                abort();
        if (c->state.workers <= 0 || c->node.max_concurrent_starts <= 0 || c->state.size <= 0)
                abort();
        for (size_t i = 0; i < c->state.n_min_sizes; i++) {
                const class_min_size *m = &c->state.min_sizes[i];
                if (!m->storage_class || agent_config_size_for_class(c, m->storage_class) < c->state.size)
                        abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        agent_config *c = NULL;
        vt_error *err = NULL;
        int r = agent_config_parse((const char *)data, size, "fuzz.yaml", &c, &err);
        if (r < 0) {
                if (!err || !err->msg || c)
                        abort();
                vt_error_free(err);
                return 0;
        }
        if (err || !c)
                abort();
        check_accepted(c);
        agent_config_free(c);
        return 0;
}
