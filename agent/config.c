/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"
#include "launcher_identity.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/fileio.h"
#include "base/quantity.h"

/* The state Lease: a holder that has not renewed for the renew deadline
 * stops its swtpm, and must be done before the duration has passed. The stop
 * takes at most: the control channel (1 s at least), then SIGTERM and SIGKILL
 * (3 s each), plus a second of slack: the duration exceeds the deadline by
 * at least STATE_LEASE_STOP_MARGIN. */
#define STATE_LEASE_MIN 15
#define STATE_LEASE_STOP_MARGIN 8

enum ftype { F_SECTION, F_STRING, F_BOOL, F_INT, F_QUANTITY, F_ABSPATH, F_FILE, F_ENUM, F_CLASS_SIZES };

typedef struct field {
        const char *key;
        enum ftype type;
        size_t offset;
        const struct field *sub;      /* F_SECTION */
        const char *const *choices;   /* F_ENUM */
        int min, max;                 /* F_INT */
        bool nonempty;                /* F_STRING: "" is refused (it would mean NULL) */
} field;

#define OFF(m) offsetof(agent_config, m)

static const char *const providers[] = {"secret", "kmip", "broker", NULL};
static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const formats[] = {"json", "text", NULL};

static const field state_fields[] = {
        {"enabled", F_BOOL, OFF(state.enabled)},
        {"storageClass", F_STRING, OFF(state.storage_class)},
        {"size", F_QUANTITY, OFF(state.size)},
        {"minimumSizes", F_CLASS_SIZES, 0},
        {"leaseName", F_STRING, OFF(state.lease_name), .nonempty = true},
        {"workers", F_INT, OFF(state.workers), .min = 1, .max = 256},
        {0},
};
static const field node_fields[] = {
        {"enabled", F_BOOL, OFF(node.enabled)},
        {"kubeletRoot", F_ABSPATH, OFF(node.kubelet_root)},
        {"launcherSocket", F_STRING, OFF(node.launcher_socket)},
        {"swtpmStateDir", F_ABSPATH, OFF(node.swtpm_state_dir)},
        {"swtpmUser", F_STRING, OFF(node.swtpm_user), .nonempty = true},
        {"swtpmSocketDir", F_ABSPATH, OFF(node.swtpm_socket_dir)},
        {"kubevirtHookSocket", F_ABSPATH, OFF(node.kubevirt_hook_socket)},
        {"runDir", F_ABSPATH, OFF(node.run_dir)},
        {"attachmentImage", F_STRING, OFF(node.attachment_image), .nonempty = true},
        {"maxConcurrentStarts", F_INT, OFF(node.max_concurrent_starts), .min = 1, .max = 1024},
        {"stateLeaseSeconds", F_INT, OFF(node.state_lease_seconds), .min = STATE_LEASE_MIN, .max = 3600},
        {"stateLeaseRenewDeadlineSeconds", F_INT, OFF(node.state_lease_renew_deadline_seconds), .min = 0,
         .max = 3600},
        {"swtpmUidBase", F_INT, OFF(node.swtpm_uid_base), .min = 1000, .max = 2147000000},
        {"swtpmUidCount", F_INT, OFF(node.swtpm_uid_count), .min = 1, .max = 1000000000},
        {0},
};
static const field kmip_fields[] = {
        {"endpoint", F_STRING, OFF(keys.kmip_endpoint), .nonempty = true},
        {"caFile", F_FILE, OFF(keys.kmip_ca_file)},
        {"certFile", F_FILE, OFF(keys.kmip_cert_file)},
        {"keyFile", F_FILE, OFF(keys.kmip_key_file)},
        {0},
};
static const field keys_broker_fields[] = {
        {"url", F_STRING, OFF(keys.broker_url), .nonempty = true},
        {"caFile", F_FILE, OFF(keys.broker_ca_file)},
        {"tokenFile", F_ABSPATH, OFF(keys.broker_token_file)},
        {0},
};
static const field keys_fields[] = {
        {"provider", F_ENUM, OFF(keys.provider), .choices = providers},
        {"kmip", F_SECTION, 0, kmip_fields},
        {"broker", F_SECTION, 0, keys_broker_fields},
        {0},
};
static const field broker_fields[] = {
        {"listen", F_STRING, OFF(broker.listen)},
        {"certFile", F_FILE, OFF(broker.cert_file)},
        {"keyFile", F_FILE, OFF(broker.key_file)},
        {"agentServiceAccount", F_STRING, OFF(broker.agent_service_account), .nonempty = true},
        {"agentDaemonSet", F_STRING, OFF(broker.agent_daemonset), .nonempty = true},
        {0},
};
static const field http_fields[] = {
        {"listen", F_STRING, OFF(http.listen)},
        {0},
};
static const field log_fields[] = {
        {"level", F_ENUM, OFF(log.level), .choices = levels},
        {"format", F_ENUM, OFF(log.format), .choices = formats},
        {0},
};
static const field top_fields[] = {
        {"namespace", F_STRING, OFF(namespace), .nonempty = true},
        {"nodeName", F_STRING, OFF(node_name)},
        {"state", F_SECTION, 0, state_fields},
        {"node", F_SECTION, 0, node_fields},
        {"keys", F_SECTION, 0, keys_fields},
        {"broker", F_SECTION, 0, broker_fields},
        {"http", F_SECTION, 0, http_fields},
        {"log", F_SECTION, 0, log_fields},
        {0},
};

agent_config *agent_config_new_default(void) {
        agent_config *c = xnew(agent_config, 1);
        c->namespace = xstrdup("vtpm-system");
        c->state.enabled = true;
        c->state.size = 10LL << 20;
        c->state.lease_name = xstrdup("vtpm-agent-state-controller");
        c->state.workers = 16;
        c->node.enabled = true;
        c->node.kubelet_root = xstrdup("/var/lib/kubelet");
        c->node.launcher_socket = xstrdup("sockets/launcher-sock"); /* KubeVirt's virt-launcher */
        c->node.swtpm_state_dir = xstrdup("/var/lib/libvirt/swtpm");
        c->node.swtpm_user = xstrdup("tss");
        c->node.swtpm_socket_dir = xstrdup("/run/vtpm");
        c->node.run_dir = xstrdup("/run/vtpm-agent");
        c->node.attachment_image = xstrdup("registry.k8s.io/pause:3.10");
        c->node.max_concurrent_starts = 4;
        c->node.state_lease_seconds = 40;
        c->node.swtpm_uid_base = 2100000000;
        c->node.swtpm_uid_count = 40000000;
        c->keys.provider = xstrdup("secret");
        c->http.listen = xstrdup("127.0.0.1:9464");
        c->broker.agent_service_account = xstrdup("vtpm-agent");
        c->broker.agent_daemonset = xstrdup("vtpm-agent");
        c->log.level = xstrdup("info");
        c->log.format = xstrdup("json");
        return c;
}

void agent_config_free(agent_config *c) {
        if (!c)
                return;
        free(c->namespace);
        free(c->node_name);
        free(c->state.storage_class);
        for (size_t i = 0; i < c->state.n_min_sizes; i++)
                free(c->state.min_sizes[i].storage_class);
        free(c->state.min_sizes);
        free(c->state.lease_name);
        free(c->node.kubelet_root);
        free(c->node.launcher_socket);
        free(c->node.swtpm_state_dir);
        free(c->node.swtpm_user);
        free(c->node.swtpm_socket_dir);
        free(c->node.kubevirt_hook_socket);
        free(c->node.run_dir);
        free(c->node.attachment_image);
        free(c->keys.provider);
        free(c->keys.kmip_endpoint);
        free(c->keys.kmip_ca_file);
        free(c->keys.kmip_cert_file);
        free(c->keys.kmip_key_file);
        free(c->keys.broker_url);
        free(c->keys.broker_ca_file);
        free(c->keys.broker_token_file);
        free(c->broker.listen);
        free(c->broker.cert_file);
        free(c->broker.key_file);
        free(c->broker.agent_service_account);
        free(c->broker.agent_daemonset);
        free(c->http.listen);
        free(c->log.level);
        free(c->log.format);
        free(c);
}

int64_t agent_config_size_for_class(const agent_config *c, const char *storage_class) {
        int64_t s = c->state.size;
        for (size_t i = 0; storage_class && i < c->state.n_min_sizes; i++)
                if (strcmp(c->state.min_sizes[i].storage_class, storage_class) == 0 && c->state.min_sizes[i].bytes > s)
                        s = c->state.min_sizes[i].bytes;
        return s;
}

typedef struct parse_ctx {
        yaml_document_t *doc;
        const char *name;
        agent_config *cfg;
        vt_error **err;
} parse_ctx;

static int at(parse_ctx *p, const yaml_node_t *n, const char *fmt, const char *a, const char *b) {
        return vt_error_set(p->err, EINVAL, "%s:%zu:%zu: %s%s%s", p->name, n->start_mark.line + 1,
                            n->start_mark.column + 1, fmt, a ? a : "", b ? b : "");
}

static const char *scalar(const yaml_node_t *n) {
        return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static char *known_keys(const field *f) {
        vt_buf b = {0};
        for (; f->key; f++)
                vt_buf_printf(&b, "%s%s", b.len ? ", " : "", f->key);
        return vt_buf_steal(&b);
}

static int parse_section(parse_ctx *p, const yaml_node_t *map, const field *fields, const char *section);

/* Where the value of field f goes in the configuration being built. */
static void *field_ptr(parse_ctx *p, const field *f) {
        return (char *)p->cfg + f->offset;
}

/* state.minimumSizes: storage-class name -> size, appended to the table. */
static int parse_class_sizes(parse_ctx *p, const yaml_node_t *v, const char *path) {
        if (v->type != YAML_MAPPING_NODE)
                return at(p, v, "\"", path, "\" must map storage-class names to sizes");
        for (yaml_node_pair_t *pr = v->data.mapping.pairs.start; pr < v->data.mapping.pairs.top; pr++) {
                yaml_node_t *k = yaml_document_get_node(p->doc, pr->key);
                yaml_node_t *q = yaml_document_get_node(p->doc, pr->value);
                if (!scalar(k) || !scalar(q))
                        return at(p, q ? q : v, "\"", path, "\" entries must be name: size");
                int64_t bytes;
                _cleanup_error_ vt_error *qe = NULL;
                if (quantity_parse(scalar(q), &bytes, &qe) < 0)
                        return at(p, q, path, ": ", qe->msg);
                agent_config *c = p->cfg;
                c->state.min_sizes = xrealloc(c->state.min_sizes, (c->state.n_min_sizes + 1) * sizeof(class_min_size));
                c->state.min_sizes[c->state.n_min_sizes++] = (class_min_size){xstrdup(scalar(k)), bytes};
        }
        return 0;
}

static int parse_int(parse_ctx *p, const field *f, const yaml_node_t *v, const char *s, bool plain, const char *path) {
        char *end = NULL;
        long n = strtol(s, &end, 10);
        if (!plain || !*s || *end || n < f->min || n > f->max) {
                _cleanup_free_ char *range = xasprintf("\" must be a whole number from %d to %d", f->min, f->max);
                return at(p, v, "\"", path, range);
        }
        *(int *)field_ptr(p, f) = (int)n;
        return 0;
}

static int parse_quantity(parse_ctx *p, const field *f, const yaml_node_t *v, const char *s, const char *path) {
        _cleanup_error_ vt_error *qe = NULL;
        int64_t bytes;
        if (quantity_parse(s, &bytes, &qe) < 0)
                return at(p, v, path, ": ", qe->msg);
        /* Found by fuzz-config: "size: 0" was accepted, and every state
         * PVC would then be refused by the API server. */
        if (bytes <= 0)
                return at(p, v, path, " must be a size above zero, e.g. 10Mi", "");
        *(int64_t *)field_ptr(p, f) = bytes;
        return 0;
}

static void store_string(parse_ctx *p, const field *f, const char *s) {
        char **slot = field_ptr(p, f);
        free(*slot);
        *slot = *s ? xstrdup(s) : NULL;
}

static int parse_enum(parse_ctx *p, const field *f, const yaml_node_t *v, const char *s, const char *path) {
        for (const char *const *c = f->choices; *c; c++)
                if (strcmp(s, *c) == 0) {
                        store_string(p, f, s);
                        return 0;
                }
        vt_buf b = {0};
        for (const char *const *c = f->choices; *c; c++)
                vt_buf_printf(&b, "%s%s", b.len ? ", " : "", *c);
        _cleanup_free_ char *choices = vt_buf_steal(&b);
        _cleanup_free_ char *m = xasprintf("\" must be one of: %s", choices);
        return at(p, v, "\"", path, m);
}

/* F_ABSPATH and F_FILE; an F_FILE must also be readable when the
 * configuration is loaded. */
static int parse_path(parse_ctx *p, const field *f, const yaml_node_t *v, const char *s, const char *path) {
        if (s[0] != '/')
                return at(p, v, "\"", path, "\" must be an absolute path");
        if (f->type == F_FILE && access(s, R_OK) < 0) {
                _cleanup_free_ char *m = xasprintf("\": cannot read %s: %s", s, strerror(errno));
                return at(p, v, "\"", path, m);
        }
        store_string(p, f, s);
        return 0;
}

static int parse_scalar(parse_ctx *p, const field *f, const yaml_node_t *v, const char *path) {
        const char *s = scalar(v);
        if (!s)
                return at(p, v, "\"", path, "\" must be a single value, not a list or mapping");
        bool plain = v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        switch (f->type) {
        case F_BOOL:
                if (!plain || (strcmp(s, "true") != 0 && strcmp(s, "false") != 0))
                        return at(p, v, "\"", path, "\" must be true or false");
                *(bool *)field_ptr(p, f) = strcmp(s, "true") == 0;
                return 0;
        case F_INT:
                return parse_int(p, f, v, s, plain, path);
        case F_QUANTITY:
                return parse_quantity(p, f, v, s, path);
        case F_ENUM:
                return parse_enum(p, f, v, s, path);
        case F_ABSPATH:
        case F_FILE:
                return parse_path(p, f, v, s, path);
        case F_STRING:
                /* Found by fuzz-config: "namespace:" left the namespace NULL. */
                if (f->nonempty && !*s)
                        return at(p, v, "\"", path, "\" must not be empty");
                store_string(p, f, s);
                return 0;
        default:
                return at(p, v, "internal: unhandled type for ", path, NULL);
        }
}

static int parse_value(parse_ctx *p, const field *f, const yaml_node_t *v, const char *path) {
        switch (f->type) {
        case F_SECTION:
                if (v->type != YAML_MAPPING_NODE)
                        return at(p, v, "\"", path, "\" must be a mapping");
                return parse_section(p, v, f->sub, path);
        case F_CLASS_SIZES:
                return parse_class_sizes(p, v, path);
        default:
                return parse_scalar(p, f, v, path);
        }
}

static int parse_section(parse_ctx *p, const yaml_node_t *map, const field *fields, const char *section) {
        for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
                yaml_node_t *k = yaml_document_get_node(p->doc, pr->key);
                yaml_node_t *v = yaml_document_get_node(p->doc, pr->value);
                const char *key = scalar(k);
                if (!key)
                        return at(p, k, "keys must be plain names", NULL, NULL);
                const field *f = fields;
                while (f->key && strcmp(f->key, key) != 0)
                        f++;
                _cleanup_free_ char *path = section ? xasprintf("%s.%s", section, key) : xstrdup(key);
                if (!f->key) {
                        _cleanup_free_ char *known = known_keys(fields);
                        _cleanup_free_ char *m = xasprintf("\" (known keys here: %s)", known);
                        return at(p, k, "unknown key \"", path, m);
                }
                int r = parse_value(p, f, v, path);
                if (r < 0)
                        return r;
        }
        return 0;
}

int agent_config_parse(const char *data, size_t len, const char *name, agent_config **ret, vt_error **err) {
        assert_return(data && name && ret, -EINVAL);
        _cleanup_(agent_config_freep) agent_config *c = agent_config_new_default();
        yaml_parser_t parser;
        yaml_document_t doc;
        if (!yaml_parser_initialize(&parser))
                return vt_error_set(err, ENOMEM, "%s: cannot initialise YAML parser", name);
        yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
        int r = 0;
        if (!yaml_parser_load(&parser, &doc)) {
                r = vt_error_set(err, EINVAL, "%s:%zu:%zu: %s", name, parser.problem_mark.line + 1,
                                 parser.problem_mark.column + 1, parser.problem ? parser.problem : "YAML syntax error");
                yaml_parser_delete(&parser);
                return r;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        parse_ctx p = {&doc, name, c, err};
        if (root && root->type != YAML_MAPPING_NODE)
                r = at(&p, root, "the configuration must be a mapping of keys", NULL, NULL);
        else if (root)
                r = parse_section(&p, root, top_fields, NULL);
        if (r == 0 && !launcher_socket_ref_valid(c->node.launcher_socket))
                r = vt_error_set(err, EINVAL,
                                 "%s: node.launcherSocket must be <emptyDir volume name>/<file name> of the launcher "
                                 "pod (KubeVirt: sockets/launcher-sock)",
                                 name);
        if (r == 0 && strcmp(c->keys.provider, "kmip") == 0 &&
            (!c->keys.kmip_endpoint || !c->keys.kmip_ca_file || !c->keys.kmip_cert_file || !c->keys.kmip_key_file))
                r = vt_error_set(err, EINVAL,
                                 "%s: keys.provider is kmip but keys.kmip is missing endpoint, caFile, certFile or keyFile",
                                 name);
        if (r == 0 && strcmp(c->keys.provider, "broker") == 0 &&
            (!c->keys.broker_url || strncmp(c->keys.broker_url, "https://", 8) != 0 || !c->keys.broker_ca_file ||
             !c->keys.broker_token_file))
                r = vt_error_set(err, EINVAL,
                                 "%s: keys.provider is broker but keys.broker is missing an https:// url, caFile or "
                                 "tokenFile",
                                 name);
        if (r == 0 && c->broker.listen && (!c->broker.cert_file || !c->broker.key_file))
                r = vt_error_set(err, EINVAL, "%s: broker.listen needs broker.certFile and broker.keyFile (TLS only)",
                                 name);
        if (r == 0 && c->broker.listen && strcmp(c->keys.provider, "broker") == 0)
                r = vt_error_set(err, EINVAL,
                                 "%s: the key broker (broker.listen) holds the KEKs itself: keys.provider must be "
                                 "secret or kmip",
                                 name);
        if (r == 0 && c->node.state_lease_renew_deadline_seconds &&
            (c->node.state_lease_renew_deadline_seconds < 5 ||
             c->node.state_lease_renew_deadline_seconds > c->node.state_lease_seconds - STATE_LEASE_STOP_MARGIN))
                r = vt_error_set(err, EINVAL,
                                 "%s: node.stateLeaseRenewDeadlineSeconds must be at least 5 and at most "
                                 "node.stateLeaseSeconds - %d (%d): a node that cannot renew needs that long to stop "
                                 "its swtpm before another node may start one",
                                 name, STATE_LEASE_STOP_MARGIN, c->node.state_lease_seconds - STATE_LEASE_STOP_MARGIN);
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

int agent_config_load(const char *path, agent_config **ret, vt_error **err) {
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        int r = read_full_file(path, 1u << 20, &data, &len, err);
        if (r < 0)
                return vt_error_prefix(err, r, "configuration: ");
        return agent_config_parse(data, len, path, ret, err);
}

void agent_config_state_lease_timing(const agent_config *c, state_lease_timing *ret) {
        int d = c->node.state_lease_seconds;
        int deadline = c->node.state_lease_renew_deadline_seconds;
        if (!deadline) {
                /* two thirds, as client-go's 15/10 s, but leaving the stop margin */
                deadline = d * 2 / 3;
                if (deadline > d - STATE_LEASE_STOP_MARGIN)
                        deadline = d - STATE_LEASE_STOP_MARGIN;
        }
        int retry = deadline / 5;
        ret->duration = d;
        ret->renew_deadline = deadline;
        ret->retry_period = retry < 1 ? 1 : retry;
}
