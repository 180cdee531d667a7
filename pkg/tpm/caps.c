/* SPDX-License-Identifier: Apache-2.0 */
#include "tpm/caps.h"

#include <jansson.h>
#include <string.h>
#include <sys/wait.h>

#include "base/alloc.h"
#include "tpm/exec.h"

/* Real outputs are ~400 bytes; anything much larger is not a capability list. */
#define CAPS_MAX_INPUT (64 * 1024)
#define CAPS_MAX_FEATURES 256
#define CAPS_MAX_STRING 128

void tpm_features_done(tpm_features *f) {
        if (!f)
                return;
        free(f->type);
        free(f->version);
        for (size_t i = 0; i < f->n_names; i++)
                free(f->names[i]);
        free(f->names);
        *f = (tpm_features){0};
}

bool tpm_features_has(const tpm_features *f, const char *name) {
        for (size_t i = 0; f && i < f->n_names; i++)
                if (strcmp(f->names[i], name) == 0)
                        return true;
        return false;
}


/* Printable ASCII only: these strings end up in node labels and messages. */
static bool sane_string(const char *s, size_t len) {
        if (len == 0 || len > CAPS_MAX_STRING || strlen(s) != len)
                return false;
        for (size_t i = 0; i < len; i++)
                if (s[i] < 0x21 || s[i] > 0x7e)
                        return false;
        return true;
}

int tpm_features_parse(const char *data, size_t len, const char *want_type, tpm_features *ret, vt_error **err) {
        assert_return(ret && (data || len == 0), -EINVAL);
        if (len == 0)
                return vt_error_set(err, EBADMSG, "empty capability output");
        if (len > CAPS_MAX_INPUT)
                return vt_error_set(err, EBADMSG, "capability output too large (%zu bytes)", len);
        json_error_t jerr;
        json_auto_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return vt_error_set(err, EBADMSG, "capability output is not JSON (line %d column %d: %s)",
                                    jerr.line, jerr.column, jerr.text);
        if (!json_is_object(root))
                return vt_error_set(err, EBADMSG, "capability output is not a JSON object");

        json_t *type = json_object_get(root, "type");
        if (!json_is_string(type) || !sane_string(json_string_value(type), json_string_length(type)))
                return vt_error_set(err, EBADMSG, "capability output has no valid \"type\"");
        if (want_type && strcmp(json_string_value(type), want_type) != 0)
                return vt_error_set(err, EBADMSG, "capability output is for \"%s\", expected \"%s\"",
                                    json_string_value(type), want_type);

        json_t *version = json_object_get(root, "version");
        if (version && !(json_is_string(version) &&
                         sane_string(json_string_value(version), json_string_length(version))))
                return vt_error_set(err, EBADMSG, "capability output has an invalid \"version\"");

        json_t *features = json_object_get(root, "features");
        if (!json_is_array(features))
                return vt_error_set(err, EBADMSG, "capability output has no \"features\" array");
        size_t n = json_array_size(features);
        if (n > CAPS_MAX_FEATURES)
                return vt_error_set(err, EBADMSG, "capability output lists too many features (%zu)", n);

        tpm_features f = {0};
        f.names = xnew(char *, n + 1);
        for (size_t i = 0; i < n; i++) {
                json_t *v = json_array_get(features, i);
                if (!json_is_string(v) || !sane_string(json_string_value(v), json_string_length(v))) {
                        tpm_features_done(&f);
                        return vt_error_set(err, EBADMSG, "capability output: feature %zu is not a valid string", i);
                }
                f.names[f.n_names++] = xstrdup(json_string_value(v));
        }
        f.type = xstrdup(json_string_value(type));
        f.version = version ? xstrdup(json_string_value(version)) : NULL;
        *ret = f;
        return 0;
}

void tpm_caps_done(tpm_caps *c) {
        if (!c)
                return;
        tpm_features_done(&c->swtpm);
        tpm_features_done(&c->setup);
        *c = (tpm_caps){0};
}

void tpm_caps_from_features(tpm_features *swtpm, tpm_features *setup, tpm_caps *ret) {
        tpm_caps c = {.swtpm = *swtpm, .setup = *setup};
        *swtpm = (tpm_features){0};
        *setup = (tpm_features){0};
        c.tpm12 = tpm_features_has(&c.swtpm, "tpm-1.2");
        c.tpm2 = tpm_features_has(&c.swtpm, "tpm-2.0");
        c.key_fd = tpm_features_has(&c.swtpm, "cmdarg-key-fd");
        c.pwd_fd = tpm_features_has(&c.swtpm, "cmdarg-pwd-fd");
        c.print_states = tpm_features_has(&c.swtpm, "cmdarg-print-states");
        c.seccomp = tpm_features_has(&c.swtpm, "cmdarg-seccomp");
        c.flags_startup = tpm_features_has(&c.swtpm, "flags-opt-startup");
        c.migration = tpm_features_has(&c.swtpm, "cmdarg-migration");
        c.lock_storage = tpm_features_has(&c.swtpm, "ctrl-lock-storage");
        c.setup_tpm12 = tpm_features_has(&c.setup, "tpm-1.2");
        c.setup_tpm2 = tpm_features_has(&c.setup, "tpm-2.0");
        c.setup_keyfile_fd = tpm_features_has(&c.setup, "cmdarg-keyfile-fd");
        c.setup_pwdfile_fd = tpm_features_has(&c.setup, "cmdarg-pwdfile-fd");
        c.setup_create_config = tpm_features_has(&c.setup, "cmdarg-create-config-files");
        c.setup_reconfigure_pcr = tpm_features_has(&c.setup, "cmdarg-reconfigure-pcr-banks");
        c.setup_rsa3072 = tpm_features_has(&c.setup, "tpm2-rsa-keysize-3072");
        *ret = c;
}

static int ask(const char *const *argv, const char *type, usec_t timeout, tpm_features *ret, vt_error **err) {
        tpm_run_result res = {0};
        int r = tpm_run(argv, NULL, 0, timeout, &res, err);
        if (r < 0)
                return vt_error_prefix(err, r, "%s capabilities: ", type);
        if (!WIFEXITED(res.status) || WEXITSTATUS(res.status) != 0) {
                _cleanup_free_ char *st = tpm_describe_status(res.status);
                _cleanup_free_ char *tail = tpm_text_tail(res.err, strlen(res.err), 1000);
                r = vt_error_set(err, EIO, "%s --print-capabilities %s: %s", argv[0], st, tail);
                tpm_run_result_done(&res);
                return r;
        }
        r = tpm_features_parse(res.out, strlen(res.out), type, ret, err);
        tpm_run_result_done(&res);
        if (r < 0)
                return vt_error_prefix(err, r, "%s --print-capabilities: ", argv[0]);
        return 0;
}

int tpm_caps_detect(const char *swtpm_path, const char *swtpm_setup_path, usec_t timeout, tpm_caps *ret,
                    vt_error **err) {
        assert_return(ret, -EINVAL);
        if (!timeout)
                timeout = 10 * USEC_PER_SEC;
        const char *sw = swtpm_path ? swtpm_path : "swtpm";
        const char *st = swtpm_setup_path ? swtpm_setup_path : "swtpm_setup";
        tpm_features a = {0}, b = {0};
        int r = ask((const char *const[]){sw, "socket", "--print-capabilities", NULL}, "swtpm", timeout, &a, err);
        if (r < 0)
                return r;
        r = ask((const char *const[]){st, "--print-capabilities", NULL}, "swtpm_setup", timeout, &b, err);
        if (r < 0) {
                tpm_features_done(&a);
                return r;
        }
        tpm_caps_from_features(&a, &b, ret);
        return 0;
}
