/* SPDX-License-Identifier: Apache-2.0 */
/* Test-bed tool (not product code): both writers of a TPMState's status, the
 * state controller and a node agent, write it against the real API server
 * ROUNDS times each, in the same rounds (a barrier starts both writes of a
 * round together, each after a random pause of up to 1 ms so either may land
 * first); after each round the object is read back and both
 * writers' latest values must be there (issue 19, acceptance 3).
 *
 *   tpmstate-race --kubeconfig ADMIN --namespace NS --node NODE
 *                 [--state-kubeconfig F] [--node-kubeconfig F] [--name NAME]
 *                 [--rounds 1000] [--mode apply|merge] [--moved-to NODE2[:F]]
 *                 [--keep-going] [--legacy]
 *
 * --mode apply (default): the product's writes, agent/tpmstate_status.c
 *   (server-side apply, one field manager per writer). Each round the state
 *   writer changes phase, message, observedGeneration, the other volume
 *   fields and conditions (RestartRequired only in even rounds); the node
 *   writer changes nodeState (swtpmPid only in odd rounds), keys (kekRotation
 *   every third round) and encrypted. The check is exact: a writer's field is
 *   what it last applied, keys it left out are gone.
 * --mode merge: the writes of 605fe88, for comparison: the state controller's
 *   update_status (a merge patch of its whole status from its copy of the
 *   TPMState, carrying nodeState, keys and encrypted over; the copy is the
 *   object as read at the start of the round, the freshest an informer can
 *   be) and the node controller's patch_status_field (merge patches of
 *   nodeState, then keys). The check is that each writer's values are there.
 *
 * --moved-to NODE2[:KUBECONFIG] (apply mode, after the rounds): the VM moves. NODE's agent
 *   applies a report with swtpmPid and a kekRotation, then NODE2's agent its
 *   own without them: the status holds exactly NODE2's report, nothing of
 *   NODE's (nodeState and keys are atomic maps in the CRD).
 *
 * --legacy: before the rounds, the release before server-side apply writes
 *   the status as it did (one merge patch, User-Agent vtpm-agent/..., so its
 *   field manager is "vtpm-agent"), with a RestartRequired condition,
 *   swtpmPid and a kekRotation that round 1 leaves out: the check of round 1
 *   then says whether the writers took the old release's fields over.
 *
 * --keep-going: do not stop at the first loss (printed), count the rounds
 *   with one.
 *
 * ADMIN creates, reads and deletes the TPMState; the writers use their own
 * kubeconfigs (default ADMIN): the suite passes tokens of the agent's
 * ServiceAccount bound to pods on a node, as the DaemonSet's are, so the
 * admission policy vtpm-agent-node-tpmstates judges every write.
 *
 * Exit: 0 nothing lost; 1 a field was lost (the first loss is printed);
 * 2 usage or setup; 3 a write was refused. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/timeutil.h"
#include "kube/client.h"
#include "kube/config.h"
#include "resources.h"
#include "tpmstate_status.h"

typedef struct race {
        const char *ns, *name, *node, *moved_to;
        long rounds;
        long losses; /* rounds with a loss (--keep-going) */
        bool merge, keep_going, legacy;
        kube_client *admin, *state_client, *node_client, *moved_client;
        pthread_barrier_t start, done;
        long round;  /* set by the main thread before the start barrier; 0: stop */
        json_t *seen; /* the object read after the last round: the state writer's copy in merge mode */
} race;

/* ---- what each writer writes in round r ---- */

static json_t *condition(const char *type, bool status, const char *reason, const char *message, long r) {
        char ts[40];
        format_rfc3339((usec_t)(1798761600LL + r) * 1000000ULL, ts); /* 2027-01-01 + r s */
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "type", type, "status", status ? "True" : "False",
                         "reason", reason, "message", message, "lastTransitionTime", ts, "observedGeneration",
                         (json_int_t)r);
}

static json_t *state_fields(const race *x, long r) {
        static const char *const phases[] = {"Pending", "Provisioning", "Ready", "Failed"};
        _cleanup_free_ char *msg = xasprintf("state round %ld", r);
        _cleanup_free_ char *pvc = xasprintf("persistent-state-for-%s", x->name);
        _cleanup_free_ char *sc = xasprintf("class-%ld", r % 3);
        _cleanup_free_ char *luid = xasprintf("launcher-uid-%ld", r);
        json_t *conds = json_array();
        json_array_append_new(conds, condition("Ready", r % 4 == 2, r % 4 == 2 ? "Provisioned" : "Provisioning", msg, r));
        if (r % 2 == 0)
                json_array_append_new(conds, condition("RestartRequired", false, "NoRestartNeeded", "", r));
        return json_pack("{s:s, s:s, s:I, s:b, s:s, s:s, s:s, s:s, s:{s:s, s:b}, s:I, s:o}", "phase", phases[r % 4],
                         "message", msg, "observedGeneration", (json_int_t)r, "persistent", r % 2 == 0, "pvcName", pvc,
                         "storageClass", sc, "storageClassSource", "agent config", "node", x->node, "launcher", "uid",
                         luid, "persistent", r % 2 == 0, "warnedGeneration", (json_int_t)r, "conditions", conds);
}

static json_t *node_state_of(const race *x, const char *node, long r) {
        static const char *const phases[] = {"Starting", "Running", "Stopped"};
        _cleanup_free_ char *msg = xasprintf("node round %ld", r);
        _cleanup_free_ char *launcher = xasprintf("%s/virt-launcher-%s", x->ns, x->name);
        json_t *ns = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "node", node, "launcher", launcher, "phase",
                               phases[r % 3], "reason", "Round", "message", msg, "encrypted", r % 2 == 1);
        if (r % 2 == 1)
                json_object_set_new(ns, "swtpmPid", json_integer(1000 + r));
        return ns;
}

static json_t *node_state(const race *x, long r) {
        return node_state_of(x, x->node, r);
}

static json_t *node_keys(const race *x, long r) {
        _cleanup_free_ char *kek = xasprintf("vtpm-system/vtpm-kek-%s#%ld", x->ns, r);
        _cleanup_free_ char *msg = xasprintf("node round %ld", r);
        json_t *k = json_pack("{s:s, s:s, s:I, s:b, s:s}", "provider", "secret", "kekId", kek, "dekGeneration",
                              (json_int_t)r, "encrypted", r % 2 == 1, "message", msg);
        if (r % 3 == 0)
                json_object_set_new(k, "kekRotation", json_pack("{s:s, s:s}", "requested", msg, "completed", msg));
        return k;
}

/* ---- the writes ---- */

static int merge_patch(kube_client *c, const race *x, json_t *status, vt_error **err) {
        json_t *patch = json_pack("{s:O}", "status", status);
        _cleanup_free_ char *path = kube_path(&res_tpmstate, x->ns, x->name, "status");
        int r = kube_patch(c, path, KUBE_PATCH_MERGE, patch, NULL, false, NULL, err);
        json_decref(patch);
        return r;
}

/* What 605fe88's state controller sent (agent/state_controller.c,
 * update_status): its whole status as a merge patch, built on `copy` (its
 * view of the TPMState): the node's nodeState and keys carried over from the
 * copy, encrypted taken from that nodeState, every field the copy has and
 * the status lacks set to null. */
static int state_write_merge(race *x, json_t *copy, json_t *status, vt_error **err) {
        json_t *old = json_object_get(copy, "status");
        static const char *const carried[] = {"nodeState", "keys"};
        for (size_t i = 0; i < ELEMENTSOF(carried); i++)
                if (json_object_get(old, carried[i]))
                        json_object_set(status, carried[i], json_object_get(old, carried[i]));
        json_t *enc = json_object_get(json_object_get(old, "nodeState"), "encrypted");
        json_object_set_new(status, "encrypted", json_boolean(json_is_true(enc)));
        if (json_equal(old, status))
                return 0; /* nothing changed: no write */
        json_t *patch = json_deep_copy(status);
        for (void *it = json_object_iter(old); it; it = json_object_iter_next(old, it))
                if (!json_object_get(status, json_object_iter_key(it)))
                        json_object_set_new(patch, json_object_iter_key(it), json_null());
        int r = merge_patch(x->state_client, x, patch, err);
        json_decref(patch);
        return r;
}

/* Up to a millisecond before a write, so either writer may land first. */
static void jitter(unsigned *seed) {
        sleep_usec((usec_t)(rand_r(seed) % 1000));
}

static int state_write(race *x, long r, vt_error **err) {
        json_t *fields = state_fields(x, r);
        int ret = x->merge ? state_write_merge(x, x->seen, fields, err)
                           : tpmstate_apply_state(x->state_client, x->ns, x->name, fields, NULL, err);
        json_decref(fields);
        return ret;
}

static int node_write_merge(race *x, json_t *ns, json_t *keys, vt_error **err) {
        json_t *a = json_pack("{s:O}", "nodeState", ns), *b = json_pack("{s:O}", "keys", keys);
        int r = merge_patch(x->node_client, x, a, err);
        if (r >= 0)
                r = merge_patch(x->node_client, x, b, err);
        json_decref(a);
        json_decref(b);
        return r;
}

static int node_write(race *x, long r, vt_error **err) {
        json_t *ns = node_state(x, r), *keys = node_keys(x, r);
        int ret = x->merge ? node_write_merge(x, ns, keys, err)
                           : tpmstate_apply_node(x->node_client, x->node, x->ns, x->name, ns, keys, NULL, err);
        json_decref(ns);
        json_decref(keys);
        return ret;
}

/* One writer: waits for a round, writes, says it is done. */
typedef struct writer {
        race *x;
        int (*write)(race *x, long r, vt_error **err);
        unsigned seed;
        int r;
        char *err;
} writer;

static void *writer_thread(void *ud) {
        writer *w = ud;
        for (;;) {
                pthread_barrier_wait(&w->x->start);
                long r = w->x->round;
                if (r == 0)
                        return NULL;
                jitter(&w->seed);
                _cleanup_error_ vt_error *err = NULL;
                w->r = w->write(w->x, r, &err);
                if (w->r < 0)
                        w->err = xstrdup(err ? err->msg : "unknown error");
                pthread_barrier_wait(&w->x->done);
        }
}

/* ---- the check after each round ---- */

static char *dump(json_t *v) {
        char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
        return s ? s : xstrdup("(absent)");
}

/* Where `got` lacks what `want` says (exact: also keys `want` left out).
 * NULL when nothing is missing; else a description (caller frees). */
static char *missing(const char *path, json_t *want, json_t *got, bool exact) {
        if (json_is_object(want) && json_is_object(got)) {
                const char *k;
                json_t *v;
                json_object_foreach(want, k, v) {
                        _cleanup_free_ char *sub = xasprintf("%s.%s", path, k);
                        char *m = missing(sub, v, json_object_get(got, k), exact);
                        if (m)
                                return m;
                }
                json_object_foreach(got, k, v) {
                        if (exact && !json_object_get(want, k)) {
                                _cleanup_free_ char *s = dump(v);
                                return xasprintf("%s.%s is %s, which it no longer writes", path, k, s);
                        }
                }
                return NULL;
        }
        if (json_equal(want, got))
                return NULL;
        _cleanup_free_ char *w = dump(want), *g = dump(got);
        return xasprintf("%s is %s, it wrote %s", path, g, w);
}

/* 0, or 1 for a loss (the first one is printed). */
static int check_round(const race *x, long r, json_t *obj) {
        json_t *status = json_object_get(obj, "status");
        json_t *want_state = state_fields(x, r), *got_state = tpmstate_state_fields(status);
        json_t *want_ns = node_state(x, r), *want_keys = node_keys(x, r);
        json_t *want_enc = json_boolean(r % 2 == 1);
        char *m = missing("status", want_state, got_state, true);
        const char *who = "state controller";
        if (!m) {
                who = "node agent";
                m = missing("status.nodeState", want_ns, json_object_get(status, "nodeState"), !x->merge);
                if (!m)
                        m = missing("status.keys", want_keys, json_object_get(status, "keys"), !x->merge);
                if (!m && !x->merge)
                        m = missing("status.encrypted", want_enc, json_object_get(status, "encrypted"), true);
        }
        if (m && x->losses == 0) {
                _cleanup_free_ char *all = dump(status);
                printf("tpmstate-race: %s: LOST in round %ld of %ld: the %s's write is gone: %s\n",
                       x->merge ? "merge" : "apply", r, x->rounds, who, m);
                printf("tpmstate-race: status after round %ld: %s\n", r, all);
        }
        free(m);
        json_decref(want_state);
        json_decref(got_state);
        json_decref(want_ns);
        json_decref(want_keys);
        json_decref(want_enc);
        return m ? 1 : 0;
}

/* ---- the VM moves ---- */

static int apply_report(const race *x, kube_client *c, const char *node, long r, json_t **ret, vt_error **err) {
        json_t *ns = node_state_of(x, node, r), *keys = node_keys(x, r);
        int ret_r = tpmstate_apply_node(c, node, x->ns, x->name, ns, keys, ret, err);
        json_decref(ns);
        json_decref(keys);
        return ret_r;
}

/* Round 3's report (swtpmPid, kekRotation) from NODE, then round 4's (neither)
 * from NODE2: the status must hold NODE2's report exactly. */
static int move(race *x) {
        _cleanup_error_ vt_error *err = NULL;
        json_t *obj = NULL;
        if (apply_report(x, x->node_client, x->node, 3, NULL, &err) < 0 ||
            apply_report(x, x->moved_client, x->moved_to, 4, &obj, &err) < 0) {
                printf("tpmstate-race: move: a write was refused: %s\n", err ? err->msg : "?");
                return 3;
        }
        json_t *status = json_object_get(obj, "status");
        json_t *want_ns = node_state_of(x, x->moved_to, 4), *want_keys = node_keys(x, 4);
        char *m = missing("status.nodeState", want_ns, json_object_get(status, "nodeState"), true);
        if (!m)
                m = missing("status.keys", want_keys, json_object_get(status, "keys"), true);
        if (m)
                printf("tpmstate-race: move: after %s's report, %s's remains: %s\n", x->moved_to, x->node, m);
        else
                printf("tpmstate-race: move: %s's report replaced %s's whole (no swtpmPid, no kekRotation left)\n",
                       x->moved_to, x->node);
        int rc = m ? 1 : 0;
        free(m);
        json_decref(want_ns);
        json_decref(want_keys);
        json_decref(obj);
        return rc;
}

/* ---- setup and the rounds ---- */

static int client_for(const char *kubeconfig, const char *ua, kube_client **ret) {
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_config_ kube_config *cfg = NULL;
        int r = kube_config_load_file(kubeconfig, NULL, &cfg, &err);
        if (r >= 0)
                r = kube_client_new(cfg, ua, ret, &err);
        if (r < 0)
                fprintf(stderr, "tpmstate-race: %s: %s\n", kubeconfig, err ? err->msg : "cannot load");
        return r;
}

static int create_tpmstate(race *x) {
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_free_ char *api_version = xasprintf("%s/%s", res_tpmstate.group, res_tpmstate.version);
        json_t *obj = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}}, s:{s:s}}", "apiVersion", api_version, "kind",
                                "TPMState", "metadata", "name", x->name, "namespace", x->ns, "labels",
                                "app.kubernetes.io/managed-by", "tpmstate-race", "spec", "vmName", x->name);
        _cleanup_free_ char *coll = kube_path(&res_tpmstate, x->ns, NULL, NULL);
        int r = kube_create(x->admin, coll, obj, &x->seen, &err);
        json_decref(obj);
        if (r < 0)
                fprintf(stderr, "tpmstate-race: cannot create TPMState %s/%s: %s\n", x->ns, x->name,
                        err ? err->msg : "?");
        return r;
}

/* What the release before server-side apply left: round 0 of both writers,
 * in one merge patch under its field manager "vtpm-agent". */
static int legacy_write(race *x, const char *kubeconfig) {
        _cleanup_(kube_client_freep) kube_client *old = NULL;
        if (client_for(kubeconfig, "vtpm-agent/0.0-legacy", &old) < 0)
                return -EINVAL;
        _cleanup_error_ vt_error *err = NULL;
        json_t *status = state_fields(x, 0);
        json_object_set_new(status, "nodeState", node_state(x, 3)); /* swtpmPid */
        json_object_set_new(status, "keys", node_keys(x, 3));       /* kekRotation */
        json_object_set_new(status, "encrypted", json_true());
        int r = merge_patch(old, x, status, &err);
        json_decref(status);
        if (r < 0)
                fprintf(stderr, "tpmstate-race: the old release's write: %s\n", err ? err->msg : "?");
        return r;
}

static void delete_tpmstate(race *x) {
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_free_ char *path = kube_path(&res_tpmstate, x->ns, x->name, NULL);
        if (kube_delete(x->admin, path, NULL, NULL, NULL, &err) < 0)
                fprintf(stderr, "tpmstate-race: cannot delete TPMState %s/%s: %s\n", x->ns, x->name,
                        err ? err->msg : "?");
}

/* One round: both writes, then the read and the check. 0, 1 (lost), 3 (refused), 2 (read failed). */
static int one_round(race *x, writer *w, long r) {
        x->round = r;
        pthread_barrier_wait(&x->start);
        pthread_barrier_wait(&x->done);
        if (w[0].r < 0 || w[1].r < 0) {
                for (int i = 0; i < 2; i++)
                        if (w[i].r < 0)
                                printf("tpmstate-race: %s: round %ld: the %s's write was refused: %s\n",
                                       x->merge ? "merge" : "apply", r, i == 0 ? "state controller" : "node agent",
                                       w[i].err);
                return 3;
        }
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_free_ char *path = kube_path(&res_tpmstate, x->ns, x->name, NULL);
        json_t *obj = NULL;
        if (kube_get(x->admin, path, &obj, &err) < 0) {
                printf("tpmstate-race: round %ld: cannot read the TPMState back: %s\n", r, err ? err->msg : "?");
                return 2;
        }
        json_decref(x->seen);
        x->seen = obj;
        return check_round(x, r, obj);
}

static int run_rounds(race *x) {
        writer w[2] = {{x, state_write, 1, 0, NULL}, {x, node_write, 2, 0, NULL}};
        pthread_t t[2];
        pthread_barrier_init(&x->start, NULL, 3);
        pthread_barrier_init(&x->done, NULL, 3);
        for (int i = 0; i < 2; i++)
                pthread_create(&t[i], NULL, writer_thread, &w[i]);
        usec_t t0 = now_monotonic();
        int rc = 0;
        long r;
        for (r = 1; r <= x->rounds; r++) {
                rc = one_round(x, w, r);
                if (rc == 1 && x->keep_going)
                        x->losses++, rc = 0;
                else if (rc != 0)
                        break;
        }
        double secs = (double)(now_monotonic() - t0) / 1e6;
        x->round = 0;
        pthread_barrier_wait(&x->start);
        for (int i = 0; i < 2; i++) {
                pthread_join(t[i], NULL);
                free(w[i].err);
        }
        pthread_barrier_destroy(&x->start);
        pthread_barrier_destroy(&x->done);
        const char *mode = x->merge ? "merge" : "apply";
        if (rc == 0 && x->losses == 0)
                printf("tpmstate-race: %s: %ld rounds, both writers in each, checked after each round: nothing lost "
                       "(%.1f s, %.1f ms a round)\n",
                       mode, x->rounds, secs, secs * 1000 / (double)x->rounds);
        else if (rc == 0) {
                printf("tpmstate-race: %s: a write was lost in %ld of %ld rounds (%.1f s)\n", mode, x->losses,
                       x->rounds, secs);
                rc = 1;
        } else
                printf("tpmstate-race: %s: stopped after %ld of %ld rounds (%.1f s)\n", mode, r, x->rounds, secs);
        return rc;
}

static void usage(void) {
        fprintf(stderr, "usage: tpmstate-race --kubeconfig ADMIN --namespace NS --node NODE [--state-kubeconfig F] "
                        "[--node-kubeconfig F] [--name NAME] [--rounds N] [--mode apply|merge] "
                        "[--moved-to NODE2[:KUBECONFIG]] [--keep-going] [--legacy]\n");
}

int main(int argc, char **argv) {
        race x = {.name = "tpmstate-race"};
        const char *admin = NULL, *state_kc = NULL, *node_kc = NULL, *mode = "apply", *rounds = "1000", *moved_arg = NULL;
        const struct {
                const char *flag;
                const char **value;
        } flags[] = {
                {"--kubeconfig", &admin}, {"--state-kubeconfig", &state_kc}, {"--node-kubeconfig", &node_kc},
                {"--namespace", &x.ns},   {"--name", &x.name},               {"--node", &x.node},
                {"--moved-to", &moved_arg}, {"--rounds", &rounds},           {"--mode", &mode},
        };
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--keep-going") == 0 || strcmp(argv[i], "--legacy") == 0) {
                        *(argv[i][2] == 'k' ? &x.keep_going : &x.legacy) = true;
                        continue;
                }
                size_t f = 0;
                while (f < ELEMENTSOF(flags) && strcmp(argv[i], flags[f].flag) != 0)
                        f++;
                if (f == ELEMENTSOF(flags) || i + 1 == argc) {
                        usage();
                        return 2;
                }
                *flags[f].value = argv[++i];
        }
        char *end = NULL;
        x.rounds = strtol(rounds, &end, 10);
        _cleanup_free_ char *moved = moved_arg ? xstrdup(moved_arg) : NULL;
        x.merge = strcmp(mode, "merge") == 0;
        /* NODE2[:KUBECONFIG]: a node name has no ':'. */
        char *moved_kc = moved ? strchr(moved, ':') : NULL;
        if (moved_kc)
                *moved_kc++ = '\0';
        x.moved_to = moved;
        if (!admin || !x.ns || !x.node || *end || x.rounds < 1 || (!x.merge && strcmp(mode, "apply") != 0) ||
            (x.moved_to && x.merge)) {
                usage();
                return 2;
        }
        if (client_for(admin, "tpmstate-race", &x.admin) < 0 ||
            client_for(state_kc ? state_kc : admin, "tpmstate-race-state", &x.state_client) < 0 ||
            client_for(node_kc ? node_kc : admin, "tpmstate-race-node", &x.node_client) < 0 ||
            (x.moved_to && client_for(moved_kc ? moved_kc : admin, "tpmstate-race-moved", &x.moved_client) < 0) ||
            create_tpmstate(&x) < 0 || (x.legacy && legacy_write(&x, admin) < 0))
                return 2;
        int rc = run_rounds(&x);
        if (rc == 0 && x.moved_to)
                rc = move(&x);
        delete_tpmstate(&x);
        json_decref(x.seen);
        kube_client_free(x.admin);
        kube_client_free(x.state_client);
        kube_client_free(x.node_client);
        kube_client_free(x.moved_client);
        return rc;
}
