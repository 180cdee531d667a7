/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's configuration file (YAML). Every key is documented in
 * README.md; an unknown key, a value of the wrong type or a bad path is
 * refused at start with file:line:column. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

typedef struct class_min_size {
        char *storage_class;
        int64_t bytes;
} class_min_size;

typedef struct agent_config {
        char *namespace; /* the agent's own namespace: Lease, KEK Secrets */
        char *node_name; /* overridden by $NODE_NAME */
        struct {
                bool enabled;
                char *storage_class;    /* first in the resolution order; NULL = unset */
                int64_t size;           /* bytes; default 10Mi */
                class_min_size *min_sizes;
                size_t n_min_sizes;
                char *lease_name;
                int workers;            /* concurrent reconciles (and writes in flight) */
        } state;
        struct {
                bool enabled;
                char *kubelet_root;
                char *launcher_socket;  /* "<emptyDir volume>/<file>" of the launcher pod: its socket */
                char *swtpm_state_dir;
                char *swtpm_user;
                char *swtpm_socket_dir; /* inside the launcher: control sockets */
                char *kubevirt_hook_socket; /* KubeVirt's PreVMStart node hook (kubevirt_hook.h); NULL: none */
                char *run_dir;          /* on the node: records of running swtpm, for adoption */
                int state_lease_seconds; /* the per-VM state Lease's duration */
                int state_lease_renew_deadline_seconds; /* stop swtpm if not renewed this long; 0: derived */
                char *attachment_image; /* image of the per-VM attachment pod */
                int max_concurrent_starts;
                int swtpm_uid_base;     /* each VM's swtpm runs as its own uid (= gid) from */
                int swtpm_uid_count;    /* [base, base + count), derived from the VM's uid */
        } node;
        struct {
                char *provider; /* "secret", "kmip" or "broker" */
                char *kmip_endpoint;
                char *kmip_ca_file, *kmip_cert_file, *kmip_key_file;
                char *broker_url;        /* "broker": https://host:port of the key broker */
                char *broker_ca_file;    /* verifies its certificate */
                char *broker_token_file; /* the pod's token with audience BROKER_AUDIENCE, re-read per request */
        } keys;
        struct {
                char *listen;            /* the key broker: "0.0.0.0:8443"; "" (default) disables */
                char *cert_file, *key_file;
                char *agent_service_account; /* whose tokens it accepts: <namespace>/<this> */
                char *agent_daemonset;       /* and only bound to a pod of this DaemonSet */
        } broker;
        struct {
                char *listen; /* "127.0.0.1:9464"; "" disables */
        } http;
        struct {
                char *level, *format;
        } log;
} agent_config;

/* Defaults only. */
agent_config *agent_config_new_default(void);
/* Defaults, overlaid with the file. */
int agent_config_load(const char *path, agent_config **ret, vt_error **err);
int agent_config_parse(const char *data, size_t len, const char *name, agent_config **ret, vt_error **err);
/* The storage-size floor for a class: max(state.size, its minimum). */
int64_t agent_config_size_for_class(const agent_config *c, const char *storage_class);
void agent_config_free(agent_config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(agent_config *, agent_config_free)

/* The per-VM state Lease's timing, derived from node.stateLeaseSeconds and
 * node.stateLeaseRenewDeadlineSeconds (validated when the file is parsed). */
typedef struct state_lease_timing {
        int duration, renew_deadline, retry_period; /* seconds */
} state_lease_timing;
void agent_config_state_lease_timing(const agent_config *c, state_lease_timing *ret);
