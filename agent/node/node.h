/* SPDX-License-Identifier: Apache-2.0 */
/* Inside the node controller (agent/node_controller.h is its public face).
 * A reconcile of one launcher goes
 *
 *   observe (observe.c)  the launcher pod, its VM, TPMState and state PVC from
 *                        the informer caches (no API request), and what the
 *                        node says of the launcher's processes;
 *   decide  (decide.c)   a pure function of that: nothing to do, wait, refuse,
 *                        or start (and how);
 *   act     (act_*.c)    the bring-up steps that need the node: launcher
 *                        identity, state lock, attachment pod, verified
 *                        mounts, cgroup, keys, re-checks, swtpm;
 *   report  (report.c)   the one status writer (server-side apply of the
 *                        node's fields) and the one place for events.
 *
 * controller.c wires it on pkg/kube/controller.h; records.c keeps what a
 * restarted agent adopts; stop.c tears a launcher's swtpm down (and fences
 * it when its state lock is lost). */
#pragma once

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include "base/hashmap.h"
#include "kube/controller.h"
#include "kube/events.h"
#include "keymgr.h"
#include "node/decide.h"
#include "node/reasons.h"
#include "node_controller.h"
#include "state_lock.h"
#include "swtpm_runtime.h"

/* A VM waiting for its key server is retried at least this often: a retry is
 * one connection to the server, and the queue's 60 s ceiling (meant for API
 * errors) would let a VM wait up to a minute after the server is back. */
#define KEY_RETRY_MAX_USEC (10 * USEC_PER_SEC)
/* Waiting on the launcher's socket, the kubelet or the caches: look again soon. */
#define NODE_RETRY_USEC (250 * USEC_PER_MSEC)
/* Waiting for a state lock to expire (or be released). */
#define NODE_LOCK_RETRY_USEC USEC_PER_SEC

/* What the agent knows of one launcher; persisted under run_dir so a
 * restarted agent adopts its swtpm instead of starting another. */
typedef struct launcher {
        char *key;            /* ns/pod */
        char *pod_uid;
        char *vm_name, *vm_uid, *ns;
        pid_t pid;            /* the launcher's process */
        uint64_t pid_start;
        pid_t swtpm_pid;
        uint64_t swtpm_start;
        char *ctrl_path;      /* inside the launcher's namespace (and swtpm's sandbox) */
        uid_t sandbox_uid;    /* the VM's own uid its swtpm runs as; 0: not chosen yet */
        char *attach_pod;     /* attachment pod name, if persistent */
        bool persistent;
        bool encrypted;
        bool lease_held;
        bool fenced;          /* swtpm stopped: its state lock could not be renewed */
        bool swtpm_ended;     /* its swtpm exited: never a second one for this launcher (QEMU is done with it) */
        /* Live migration (act_migration.c). */
        char *migration_uid;  /* the pod's kubevirt.io/migrationJobUID: a migration's target, if proven */
        char *generation;     /* the state generation its swtpm writes (state_generation.h); NULL: the root */
        char *volume;         /* the state volume's root as the kubelet published it (persistent) */
        bool handed_over;     /* a migration target that has taken the state over (marker and lock) */
        json_t *reported;     /* the nodeState last said (events and writes only on change) */
        json_t *keys;         /* the whole status.keys: merged updates, from the cached one on */
        json_t *applied;      /* {nodeState, keys} last applied successfully */
} launcher;

/* Rotation is requested on the VM's TPMState with these annotations; the
 * value is the operator's request id (for KEK rotation it names the new KEK
 * version, shared by every VM of the namespace asking for it). */
#define ANN_ROTATE_KEK "vtpm-agent.io/rotate-kek"
#define ANN_ROTATE_DEK "vtpm-agent.io/rotate-dek"

/* Whose key a launcher's start asks for (keymgr.h). */
#define KEY_SUBJECT(l) ((key_subject){.ns = (l)->ns, .vm = (l)->vm_name, .launcher_uid = (l)->pod_uid})

struct node_controller {
        kube_client *client;
        const agent_config *cfg;
        vt_metrics *metrics;
        char *node;
        kube_controller *ctl;       /* informers, queue, workers */
        kube_informer *pods;        /* launchers on this node (owned by ctl, as are the others) */
        kube_informer *tpmstates;   /* the cluster's verdict, rotation requests, status.keys */
        kube_informer *attachments; /* our attachment pods: their phase wakes their launcher */
        kube_informer *vms;         /* uid, TPM intent, version/model annotations */
        kube_informer *pvcs;        /* state PVCs: name, volumeName */
        kube_informer *vmis;        /* VMIs on this node (kubevirt.io/nodeName): migrationState */
        kube_informer *vmis_incoming; /* VMIs migrating to this node (kubevirt.io/migrationTargetNodeName) */
        kube_recorder *recorder;
        keymgr *keys;
        state_lock *locks;          /* the per-VM state Leases this node holds */
        usec_t lock_start_margin;   /* a swtpm starts only with this long left before the lock's renew deadline */
        pthread_t ticker;
        atomic_bool stopping;
        bool ticker_started;
        pthread_mutex_t lock; /* launchers, stats, verdicts */
        vt_hashmap *launchers;
        vt_hashmap *verdicts;            /* pod uid -> does its vTPM run (verdicts.c) */
        pthread_cond_t verdict_changed; /* with lock */
        node_controller_stats stats;
        uid_t swtpm_uid;
        gid_t swtpm_gid;
};

static inline bool str_eq(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}
const char *node_md(json_t *o, const char *k);
void node_stat_inc(node_controller *nc, uint64_t *f, int64_t d);

/* records.c: the launcher table and its records under node.runDir. */
void launcher_free(void *p);
launcher *launcher_get_or_new(node_controller *nc, const char *key, json_t *pod);
launcher *launcher_known(node_controller *nc, const char *key);
void launcher_forget(node_controller *nc, const char *key);
void record_save(node_controller *nc, const launcher *l);
void record_remove(node_controller *nc, const char *pod_uid);
void records_load(node_controller *nc);
uid_t choose_sandbox_uid(node_controller *nc, launcher *l);
/* mkdir node.runDir/<sub> (and node.runDir), checked. */
int node_run_subdir(node_controller *nc, const char *sub, char **ret, vt_error **err);

/* verdicts.c: what KubeVirt's PreVMStart hook waits for. */
void verdicts_init(node_controller *nc);
void verdicts_done(node_controller *nc);
void verdict_publish(node_controller *nc, const launcher *l);
void verdict_forget(node_controller *nc, const char *pod_uid);

/* report.c: nodeState (one of reasons.h), keys, events. */
void node_report(node_controller *nc, launcher *l, node_reason r, const char *detail);
/* Merge `partial` into the launcher's status.keys and apply. */
void node_keys_update(node_controller *nc, launcher *l, json_t *partial);
void node_keys_event(node_controller *nc, launcher *l, bool warn, const char *reason, const char *message);
void node_fence_event(node_controller *nc, const char *ns, const char *vm_name, const char *vm_uid);
/* The outcome for a reason (reasons.h), `err` taken for a failure. */
kube_outcome node_outcome(node_reason r, vt_error **err);
/* report + outcome: the usual end of a refused or waiting step. */
kube_outcome node_halt(node_controller *nc, launcher *l, node_reason r, const char *detail, vt_error **err);

/* observe.c */
int node_informers_new(node_controller *nc, vt_error **err);
void node_observe(node_controller *nc, const launcher *l, node_observed *ret);
void node_wake_launchers(node_controller *nc, bool (*match)(const launcher *l, const void *arg), const void *arg);

/* attachment.c */
typedef enum attach_state { ATTACH_WAITING, ATTACH_READY, ATTACH_FOREIGN } attach_state;
int ensure_attachment(node_controller *nc, launcher *l, json_t *launcher_pod, const char *pvc,
                      json_t **ret_pod, attach_state *ret_state, char **ret_foreign, vt_error **err);
void delete_attachment(node_controller *nc, launcher *l);
char *published_path(node_controller *nc, const char *attach_uid, const char *pv);

/* keys_start.c / keys_running.c */
/* rotations false (a migration's target): only the DEK is unwrapped. */
kube_outcome keys_at_start(node_controller *nc, launcher *l, json_t *ts, const char *dir, bool tpm2,
                           const tpm_sandbox *sb, bool rotations, secmem **ret_dek, bool *ret_ok);
kube_outcome keys_running(node_controller *nc, launcher *l);
const char *ts_annotation(json_t *ts, const char *name);
const char *ts_keys_field(json_t *ts, const char *which, const char *field);
json_t *rotation_done(const char *request);
void keys_from_header(json_t *keys, int state_dfd);

/* act_start.c / act_volume.c: the bring-up. */
kube_outcome act(node_controller *nc, launcher *l, json_t *pod, const node_observed *o, const node_decision *d);
char *lock_identity(node_controller *nc, const launcher *l);

/* act_migration.c: a migration target's hand-over, and what a launcher's
 * generation leaves behind. */
kube_outcome migration_handover(node_controller *nc, launcher *l);
void migration_target_gone(node_controller *nc, launcher *l);
/* The launcher pod's name (its key is ns/pod). */
const char *launcher_pod_name(const launcher *l);

/* stop.c */
void teardown(node_controller *nc, launcher *l);
void fence_swtpm(const state_lock_fence *f, void *ud);
