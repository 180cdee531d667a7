/* SPDX-License-Identifier: Apache-2.0 */
/* A thin REST client for the Kubernetes API on libcurl and jansson. It knows
 * paths, verbs and Status errors, nothing about particular resources.
 *
 * Thread-safe: requests may be issued from any number of threads at once;
 * each takes a pooled curl handle (keeping its TLS connection alive between
 * requests) so concurrent writes really are concurrent.
 *
 * Errors: API failures are reported from the server's Status object. The
 * vt_error's reason is the Status reason ("Conflict", "NotFound", ...), its
 * message says what was attempted and what the server said, and the return
 * value maps the HTTP code onto an errno:
 *   400 -EINVAL, 401 -EKEYREJECTED, 403 -EACCES, 404 -ENOENT,
 *   409 AlreadyExists -EEXIST, 409 Conflict -ESTALE, 410 -ETIME,
 *   422 -EINVAL, 429 -EAGAIN, 5xx -EAGAIN (503/504) or -EIO.
 * Transport failures: -ECONNREFUSED, -ETIMEDOUT, -EPROTO (TLS), -EIO.
 * A response body larger than KUBE_MAX_RESPONSE: -EFBIG. */
#pragma once

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "kube/config.h"

typedef struct kube_client kube_client;

/* The largest response body the client takes. A body is held whole and then
 * parsed, which needs about as much again, under the agent's 128 MiB memory
 * limit: so a few MiB, not hundreds. One object always fits: the API server
 * refuses request bodies over 3 MiB and etcd values over 1.5 MiB. A LIST
 * page over it fails with -EFBIG; ask for fewer objects (the informer halves
 * its page). Watches are not buffered whole; their events have the same cap. */
#define KUBE_MAX_RESPONSE ((size_t)8 << 20)

enum kube_verb { KUBE_VERB_GET, KUBE_VERB_LIST, KUBE_VERB_WATCH, KUBE_VERB_CREATE, KUBE_VERB_UPDATE,
                 KUBE_VERB_PATCH, KUBE_VERB_DELETE, _KUBE_VERB_MAX };

const char *kube_verb_name(enum kube_verb v);

/* Requests are also counted by the resource their path names (the plural,
 * kube_path_resource()). The set is bounded: past KUBE_STATS_RESOURCES - 1
 * names, and for paths that name none, they count as "other". */
#define KUBE_STATS_RESOURCES 32
#define KUBE_RESOURCE_NAME_MAX 64 /* a plural is a DNS label: 63 characters and the NUL */

typedef struct kube_resource_requests {
        char resource[KUBE_RESOURCE_NAME_MAX];
        uint64_t requests[_KUBE_VERB_MAX];
} kube_resource_requests;

typedef struct kube_client_stats {
        uint64_t requests[_KUBE_VERB_MAX]; /* requests sent, by verb */
        uint64_t errors;                    /* requests that failed (API or transport) */
        uint64_t token_reloads;             /* rotated token files re-read */
        size_t n_resources;                 /* requests sent, by resource and verb: */
        kube_resource_requests by_resource[KUBE_STATS_RESOURCES];
} kube_client_stats;

int kube_client_new(const kube_config *cfg, const char *user_agent, kube_client **ret, vt_error **err);
void kube_client_free(kube_client *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_client *, kube_client_free)
#define _cleanup_kube_client_ _cleanup_(kube_client_freep)

const char *kube_client_server(const kube_client *c);
const char *kube_client_namespace(const kube_client *c);
void kube_client_get_stats(kube_client *c, kube_client_stats *ret);

/* Low-level: method + path (with query) + optional JSON body text. On success
 * *ret_body (if non-NULL) is the decoded response (NULL for an empty body). */
int kube_request(kube_client *c, enum kube_verb verb, const char *method, const char *path,
                 const char *content_type, const char *body, size_t body_len, json_t **ret_body,
                 vt_error **err);

int kube_get(kube_client *c, const char *path, json_t **ret, vt_error **err);
/* One page of a list; label/field selector, limit (0 = none) and continue
 * token are optional. -EFBIG: the page is over KUBE_MAX_RESPONSE (the same
 * continue token with a smaller limit gets it in parts). */
int kube_list_page(kube_client *c, const char *collection, const char *label_selector,
                   const char *field_selector, long limit, const char *cont, json_t **ret, vt_error **err);
int kube_create(kube_client *c, const char *collection, json_t *obj, json_t **ret, vt_error **err);
int kube_update(kube_client *c, const char *path, json_t *obj, json_t **ret, vt_error **err);

enum kube_patch_type { KUBE_PATCH_JSON, KUBE_PATCH_MERGE, KUBE_PATCH_APPLY };
/* For KUBE_PATCH_APPLY (server-side apply) field_manager is required and
 * force says whether to take over conflicting fields. */
int kube_patch(kube_client *c, const char *path, enum kube_patch_type type, json_t *patch,
               const char *field_manager, bool force, json_t **ret, vt_error **err);

/* DELETE with optional preconditions (uid, resourceVersion) and propagation
 * policy ("Foreground", "Background", "Orphan" or NULL). */
int kube_delete(kube_client *c, const char *path, const char *precondition_uid,
                const char *precondition_rv, const char *propagation, vt_error **err);

/* GET /version -> gitVersion (caller frees). */
int kube_server_version(kube_client *c, char **ret_version, vt_error **err);
/* Who the server thinks we are (SelfSubjectReview): "system:serviceaccount:ns:sa". */
int kube_whoami(kube_client *c, char **ret_username, vt_error **err);

/* Streaming GET for watches, on a dedicated long-lived handle so its
 * connection is reused across reconnects. `on_data` receives the body as it
 * arrives (return < 0 to stop). `stop`, when set from another thread, ends
 * the stream within about a second. An HTTP error answer is returned as an
 * error like kube_request's. Returns 0 when the server ended the stream. */
typedef struct kube_stream kube_stream;
typedef int (*kube_stream_cb)(const char *data, size_t len, void *userdata);
int kube_stream_new(kube_client *c, kube_stream **ret);
void kube_stream_free(kube_stream *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_stream *, kube_stream_free)
int kube_stream_get(kube_stream *s, const char *path, long timeout_sec, kube_stream_cb on_data,
                    void *userdata, const atomic_bool *stop, vt_error **err);

/* Path building. Segments are URL-escaped. */
typedef struct kube_resource {
        const char *group;   /* "" for core */
        const char *version; /* "v1" */
        const char *plural;  /* "persistentvolumeclaims" */
        bool namespaced;
} kube_resource;
/* namespace NULL = all namespaces (or cluster-scoped); name NULL = the
 * collection; subresource NULL = none. Caller frees. */
char *kube_path(const kube_resource *r, const char *namespace, const char *name, const char *subresource);
/* URL-escape one query value (caller frees). */
char *kube_escape(const char *s);
/* The resource a request path names, by its plural: "pods" for
 * /api/v1/namespaces/x/pods/y, "tpmstates" for
 * /apis/g/v/namespaces/x/tpmstates/y/status, "namespaces" for
 * /api/v1/namespaces/x, "nodes" for /api/v1/nodes?watch=1. false (buf
 * untouched) for a path that names none (/version, discovery) or whose
 * plural is not a DNS label of fewer than `size` characters. */
bool kube_path_resource(const char *path, char *buf, size_t size);
