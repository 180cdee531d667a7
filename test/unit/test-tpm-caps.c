/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "base/error.h"
#include "tap.h"
#include "tpm/caps.h"

/* Verbatim outputs of Debian's swtpm 0.7.1. */
static const char swtpm_071[] =
        "{ \"type\": \"swtpm\", \"features\": [ \"tpm-1.2\", \"tpm-2.0\", \"tpm-send-command-header\", "
        "\"flags-opt-startup\", \"cmdarg-seccomp\", \"cmdarg-key-fd\", \"cmdarg-pwd-fd\", \"cmdarg-print-states\", "
        "\"nvram-backend-dir\", \"nvram-backend-file\" ], \"version\": \"0.7.1\" }\n";
static const char setup_071[] =
        "{ \"type\": \"swtpm_setup\", \"features\": [ \"tpm-1.2\", \"tpm-2.0\", \"cmdarg-keyfile-fd\", "
        "\"cmdarg-pwdfile-fd\", \"tpm12-not-need-root\", \"cmdarg-write-ek-cert-files\", "
        "\"cmdarg-create-config-files\", \"cmdarg-reconfigure-pcr-banks\", \"tpm2-rsa-keysize-2048\", "
        "\"tpm2-rsa-keysize-3072\" ], \"version\": \"0.7.1\" }\n";

static void test_parse_real_outputs(void) {
        tpm_features a = {0}, b = {0};
        vt_error *err = NULL;
        check_int_eq(tpm_features_parse(swtpm_071, strlen(swtpm_071), "swtpm", &a, &err), 0);
        check_int_eq(tpm_features_parse(setup_071, strlen(setup_071), "swtpm_setup", &b, &err), 0);
        check(err == NULL);
        check_str_eq(a.version, "0.7.1");
        check_int_eq(a.n_names, 10);
        tpm_caps c;
        tpm_caps_from_features(&a, &b, &c);
        check(c.tpm12 && c.tpm2 && c.key_fd && c.pwd_fd && c.print_states && c.seccomp && c.flags_startup);
        check(!c.migration && !c.lock_storage);
        check(c.setup_tpm12 && c.setup_tpm2 && c.setup_keyfile_fd && c.setup_pwdfile_fd && c.setup_rsa3072);
        check(tpm_caps_supports_tpm2(&c) && tpm_caps_supports_tpm12(&c) && tpm_caps_supports_key_fd(&c));
        check_str_eq(c.setup.type, "swtpm_setup");
        tpm_caps_done(&c);
}

static void expect_bad(const char *in, size_t len, const char *want_type, const char *msg_part) {
        tpm_features f = {0};
        vt_error *err = NULL;
        if (len == (size_t)-1)
                len = strlen(in);
        int r = tpm_features_parse(in, len, want_type, &f, &err);
        check_int_eq(r, -EBADMSG);
        check(err != NULL);
        if (err)
                check_contains(err->msg, msg_part);
        check(f.names == NULL);
        vt_error_free(err);
}

static void test_parse_garbage(void) {
        expect_bad("", 0, NULL, "empty");
        expect_bad("TPM emulator version 0.7.1", (size_t)-1, NULL, "not JSON");
        expect_bad("[1,2]", (size_t)-1, NULL, "not a JSON object");
        expect_bad("{\"features\":[]}", (size_t)-1, NULL, "\"type\"");
        expect_bad("{\"type\":\"swtpm\"}", (size_t)-1, NULL, "\"features\"");
        expect_bad("{\"type\":\"swtpm\",\"features\":[\"tpm-2.0\",7]}", (size_t)-1, NULL, "feature 1");
        expect_bad("{\"type\":\"swtpm\",\"features\":[\"a b\"]}", (size_t)-1, NULL, "feature 0");
        expect_bad("{\"type\":\"swtpm\",\"features\":[],\"version\":3}", (size_t)-1, NULL, "version");
        expect_bad(setup_071, strlen(setup_071), "swtpm", "expected \"swtpm\"");
        /* Truncated output (a tool killed mid-write). */
        expect_bad(swtpm_071, 40, "swtpm", "not JSON");
        /* Embedded NUL before the end. */
        expect_bad("{\"type\":\"swtpm\",\"features\":[]}\0junk", 35, NULL, "not JSON");
}

static void test_parse_minimal_and_unknown(void) {
        /* Older releases print no version; unknown features are kept, not fatal. */
        const char *in = "{\"type\":\"swtpm\",\"features\":[\"tpm-2.0\",\"cmdarg-migration\",\"future-thing\"]}";
        tpm_features f = {0};
        check_int_eq(tpm_features_parse(in, strlen(in), "swtpm", &f, NULL), 0);
        check(f.version == NULL);
        check(tpm_features_has(&f, "future-thing"));
        check(!tpm_features_has(&f, "tpm-1.2"));
        tpm_features none = {0};
        tpm_caps c;
        tpm_caps_from_features(&f, &none, &c);
        check(c.tpm2 && c.migration && !c.tpm12);
        check(!tpm_caps_supports_tpm2(&c)); /* swtpm_setup said nothing */
        tpm_caps_done(&c);
}

static void test_detect_installed(void) {
        tpm_caps c = {0};
        vt_error *err = NULL;
        int r = tpm_caps_detect(NULL, NULL, 0, &c, &err);
        check_int_eq(r, 0);
        if (err)
                printf("# %s\n", err->msg);
        check(tpm_caps_supports_tpm2(&c));
        check(tpm_caps_supports_tpm12(&c));
        check(tpm_caps_supports_key_fd(&c));
        check(c.swtpm.version != NULL);
        printf("# swtpm %s, swtpm_setup %s\n", c.swtpm.version ? c.swtpm.version : "?",
               c.setup.version ? c.setup.version : "?");
        tpm_caps_done(&c);
        vt_error_free(err);
}

static void test_detect_missing_or_wrong_tool(void) {
        tpm_caps c = {0};
        vt_error *err = NULL;
        int r = tpm_caps_detect("/nonexistent/swtpm", NULL, 0, &c, &err);
        check(r < 0);
        check(err && strstr(err->msg, "/nonexistent/swtpm"));
        vt_error_free(err);
        err = NULL;
        /* A program that prints something else entirely: /bin/echo prints its argv. */
        r = tpm_caps_detect("/bin/echo", NULL, 0, &c, &err);
        check_int_eq(r, -EBADMSG);
        check(err && strstr(err->msg, "not JSON"));
        vt_error_free(err);
        err = NULL;
        /* A tool that fails: its exit status is in the message. */
        r = tpm_caps_detect("/bin/false", NULL, 0, &c, &err);
        check_int_eq(r, -EIO);
        check(err && strstr(err->msg, "exited with status 1"));
        vt_error_free(err);
}

int main(void) {
        return tap_run((tap_case[]){
                TAP_CASE(test_parse_real_outputs),
                TAP_CASE(test_parse_garbage),
                TAP_CASE(test_parse_minimal_and_unknown),
                TAP_CASE(test_detect_installed),
                TAP_CASE(test_detect_missing_or_wrong_tool),
                {0},
        });
}
