/* SPDX-License-Identifier: Apache-2.0 */
#include "yamljson.h"

#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "alloc.h"

#define MAX_DEPTH 64

static json_t *scalar_to_json(const yaml_node_t *n) {
        const char *v = (const char *)n->data.scalar.value;
        size_t len = n->data.scalar.length;
        if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
                if (strcmp(v, "true") == 0 || strcmp(v, "True") == 0)
                        return json_true();
                if (strcmp(v, "false") == 0 || strcmp(v, "False") == 0)
                        return json_false();
                if (len == 0 || strcmp(v, "null") == 0 || strcmp(v, "~") == 0)
                        return json_null();
                char *end = NULL;
                long long i = strtoll(v, &end, 10);
                if (end && *end == '\0' && end != v)
                        return json_integer(i);
        }
        return json_stringn(v, len);
}

static int convert(yaml_document_t *doc, yaml_node_t *n, int depth, const char *name, json_t **ret,
                   vt_error **err) {
        if (depth > MAX_DEPTH)
                return vt_error_set(err, EINVAL, "%s:%zu:%zu: nesting deeper than %d levels", name,
                                    n->start_mark.line + 1, n->start_mark.column + 1, MAX_DEPTH);
        switch (n->type) {
        case YAML_SCALAR_NODE:
                *ret = scalar_to_json(n);
                return *ret ? 0 : vt_error_set(err, EINVAL, "%s:%zu:%zu: invalid UTF-8 in scalar", name,
                                               n->start_mark.line + 1, n->start_mark.column + 1);
        case YAML_SEQUENCE_NODE: {
                json_t *a = json_array();
                for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
                        json_t *v = NULL;
                        int r = convert(doc, yaml_document_get_node(doc, *it), depth + 1, name, &v, err);
                        if (r < 0) {
                                json_decref(a);
                                return r;
                        }
                        json_array_append_new(a, v);
                }
                *ret = a;
                return 0;
        }
        case YAML_MAPPING_NODE: {
                json_t *o = json_object();
                for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
                        yaml_node_t *k = yaml_document_get_node(doc, p->key);
                        if (!k || k->type != YAML_SCALAR_NODE) {
                                json_decref(o);
                                return vt_error_set(err, EINVAL, "%s:%zu:%zu: mapping keys must be scalars", name,
                                                    n->start_mark.line + 1, n->start_mark.column + 1);
                        }
                        json_t *v = NULL;
                        int r = convert(doc, yaml_document_get_node(doc, p->value), depth + 1, name, &v, err);
                        if (r < 0) {
                                json_decref(o);
                                return r;
                        }
                        _cleanup_free_ char *key = xstrndup((const char *)k->data.scalar.value, k->data.scalar.length);
                        json_object_set_new(o, key, v);
                }
                *ret = o;
                return 0;
        }
        default:
                return vt_error_set(err, EINVAL, "%s: empty YAML node", name);
        }
}

/* The document API resolves aliases into shared nodes; detect them up front by
 * scanning the event stream, so a crafted input cannot expand exponentially. */
static int refuse_aliases(const char *data, size_t len, const char *name, vt_error **err) {
        yaml_parser_t p;
        yaml_event_t ev;
        int r = 0;
        if (!yaml_parser_initialize(&p))
                return vt_error_set(err, ENOMEM, "%s: cannot initialise YAML parser", name);
        yaml_parser_set_input_string(&p, (const unsigned char *)data, len);
        for (;;) {
                if (!yaml_parser_parse(&p, &ev)) {
                        r = vt_error_set(err, EINVAL, "%s:%zu:%zu: %s", name, p.problem_mark.line + 1,
                                         p.problem_mark.column + 1, p.problem ? p.problem : "YAML syntax error");
                        break;
                }
                yaml_event_type_t t = ev.type;
                size_t line = ev.start_mark.line + 1, col = ev.start_mark.column + 1;
                yaml_event_delete(&ev);
                if (t == YAML_ALIAS_EVENT) {
                        r = vt_error_set(err, EINVAL, "%s:%zu:%zu: YAML aliases are not supported", name, line, col);
                        break;
                }
                if (t == YAML_STREAM_END_EVENT || t == YAML_DOCUMENT_END_EVENT)
                        break;
        }
        yaml_parser_delete(&p);
        return r;
}

int yaml_to_json(const char *data, size_t len, const char *name, json_t **ret, vt_error **err) {
        assert_return(data && ret, -EINVAL);
        int r = refuse_aliases(data, len, name, err);
        if (r < 0)
                return r;
        yaml_parser_t p;
        yaml_document_t doc;
        if (!yaml_parser_initialize(&p))
                return vt_error_set(err, ENOMEM, "%s: cannot initialise YAML parser", name);
        yaml_parser_set_input_string(&p, (const unsigned char *)data, len);
        if (!yaml_parser_load(&p, &doc)) {
                r = vt_error_set(err, EINVAL, "%s:%zu:%zu: %s", name, p.problem_mark.line + 1,
                                 p.problem_mark.column + 1, p.problem ? p.problem : "YAML syntax error");
                yaml_parser_delete(&p);
                return r;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        json_t *j = NULL;
        if (!root)
                r = vt_error_set(err, EINVAL, "%s: empty document", name);
        else
                r = convert(&doc, root, 0, name, &j, err);
        yaml_document_delete(&doc);
        yaml_parser_delete(&p);
        if (r < 0)
                return r;
        *ret = j;
        return 0;
}
