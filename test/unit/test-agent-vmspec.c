/* SPDX-License-Identifier: Apache-2.0 */
/* vmspec.c: TPM intent from a VM (and its annotations), state PVC names and
 * label values for any VM name, and the cache trims. */
#include <ctype.h>
#include <string.h>

#include "base/alloc.h"
#include "tap.h"
#include "vmspec.h"

static json_t *parse(const char *s) {
        json_error_t e;
        json_t *v = json_loads(s, 0, &e);
        if (!v)
                printf("# bad fixture (%s): %s\n", e.text, s);
        return v;
}

/* intent of {"spec":{"template":{"spec":{"domain":{"devices":{"tpm": TPM}}}}}} with annotations ANN */
static void intent_of(const char *tpm, const char *ann, tpm_intent *ret) {
        _cleanup_free_ char *s = xasprintf(
                "{\"metadata\":{\"name\":\"v\",\"annotations\":%s},"
                "\"spec\":{\"template\":{\"spec\":{\"domain\":{\"devices\":%s%s%s}}}}}",
                ann ? ann : "{}", tpm ? "{\"tpm\":" : "{", tpm ? tpm : "", "}");
        json_t *vm = parse(s);
        vm_tpm_intent(vm, ret);
        json_decref(vm);
}

static void test_intent_basic(void) {
        tpm_intent t;
        intent_of(NULL, NULL, &t);
        check(!t.has_tpm && !t.persistent && !t.invalid && t.source == TPM_SOURCE_NONE);
        tpm_intent_done(&t);
        intent_of("null", NULL, &t);
        check(!t.has_tpm && !t.invalid && t.source == TPM_SOURCE_NONE);
        tpm_intent_done(&t);
        intent_of("{}", NULL, &t);
        check(t.has_tpm && !t.persistent && !t.invalid && t.source == TPM_SOURCE_VM);
        tpm_intent_done(&t);
        intent_of("{\"persistent\":true}", NULL, &t);
        check(t.has_tpm && t.persistent && !t.invalid);
        tpm_intent_done(&t);
        intent_of("{\"persistent\":false}", NULL, &t);
        check(t.has_tpm && !t.persistent && !t.invalid);
        tpm_intent_done(&t);
        /* enabled: false means no TPM, whatever persistent says. */
        intent_of("{\"enabled\":false,\"persistent\":true}", NULL, &t);
        check(!t.has_tpm && !t.persistent && !t.invalid && t.source == TPM_SOURCE_VM);
        tpm_intent_done(&t);
        intent_of("{\"enabled\":true,\"persistent\":true}", NULL, &t);
        check(t.has_tpm && t.persistent && !t.invalid);
        tpm_intent_done(&t);
}

static void test_intent_bad_input(void) {
        tpm_intent t;
        intent_of("\"yes\"", NULL, &t);
        check(!t.has_tpm);
        check_contains(t.invalid, "must be an object");
        tpm_intent_done(&t);
        intent_of("[true]", NULL, &t);
        check_contains(t.invalid, "must be an object");
        tpm_intent_done(&t);
        intent_of("{\"persistent\":\"yes\"}", NULL, &t);
        check(!t.has_tpm && !t.persistent);
        check_contains(t.invalid, "devices.tpm.persistent must be true or false");
        tpm_intent_done(&t);
        intent_of("{\"persistent\":1}", NULL, &t);
        check_contains(t.invalid, "persistent must be true or false");
        tpm_intent_done(&t);
        intent_of("{\"enabled\":\"false\"}", NULL, &t);
        check_contains(t.invalid, "devices.tpm.enabled must be true or false");
        tpm_intent_done(&t);
}

/* The template's annotations (KubeVirt copies them to the VMI) come first. */
static void test_template_annotations(void) {
        json_t *vm = parse("{\"metadata\":{\"annotations\":{\"vtpm-agent.io/tpm-version\":\"2.0\"}},"
                           "\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"vtpm-agent.io/tpm-model\":"
                           "\"tpm-tis\",\"other\":\"x\"}}}}}");
        check_str_eq(vm_tpm_annotation(vm, ANNOTATION_TPM_MODEL), "tpm-tis");
        check_str_eq(vm_tpm_annotation(vm, ANNOTATION_TPM_VERSION), "2.0");
        check(!vm_tpm_annotations_conflict(vm));
        /* the trim keeps the template's TPM annotations, at the same path, and nothing else of the template */
        json_t *t = vm_trim(vm);
        check_str_eq(vm_tpm_annotation(t, ANNOTATION_TPM_MODEL), "tpm-tis");
        check(!json_object_get(json_object_get(json_object_get(json_object_get(t, "spec"), "template"), "metadata"),
                               "spec"));
        check(!json_object_get(
                json_object_get(json_object_get(json_object_get(json_object_get(t, "spec"), "template"), "metadata"),
                                "annotations"),
                "other"));
        json_decref(t);
        json_decref(vm);
        vm = parse("{\"metadata\":{\"annotations\":{\"vtpm-agent.io/tpm-version\":\"2.0\"}},"
                   "\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"vtpm-agent.io/tpm-version\":\"1.2\"}},"
                   "\"spec\":{\"domain\":{\"devices\":{\"tpm\":{}}}}}}}");
        _cleanup_free_ char *c = vm_tpm_annotations_conflict(vm);
        check_contains(c, "vtpm-agent.io/tpm-version is \"2.0\" on the VM but \"1.2\" in spec.template");
        tpm_intent it;
        vm_tpm_intent(vm, &it);
        check_contains(it.invalid, "set it once, in the template");
        tpm_intent_done(&it);
        json_decref(vm);
}

static void test_intent_annotations(void) {
        tpm_intent t;
        intent_of("{\"persistent\":true}", "{\"vtpm-agent.io/tpm-version\":\"2.0\",\"vtpm-agent.io/tpm-model\":\"tpm-tis\"}",
                  &t);
        check(t.has_tpm && t.persistent && !t.invalid);
        tpm_intent_done(&t);
        intent_of("{\"persistent\":true}", "{\"vtpm-agent.io/tpm-version\":\"1.2\",\"vtpm-agent.io/tpm-model\":\"tpm-tis\"}",
                  &t);
        check(!t.invalid);
        tpm_intent_done(&t);
        intent_of("{\"persistent\":true}", "{\"vtpm-agent.io/tpm-version\":\"3.0\"}", &t);
        check_contains(t.invalid, "vtpm-agent.io/tpm-version is \"3.0\"");
        check_contains(t.invalid, "\"2.0\" (the default) and \"1.2\"");
        tpm_intent_done(&t);
        intent_of("{}", "{\"vtpm-agent.io/tpm-model\":\"tpm-spapr\"}", &t);
        check_contains(t.invalid, "vtpm-agent.io/tpm-model is \"tpm-spapr\"");
        tpm_intent_done(&t);
        /* 1.2 with the default model (crb) or crb explicitly: refused as Nova does. */
        intent_of("{\"persistent\":true}", "{\"vtpm-agent.io/tpm-version\":\"1.2\"}", &t);
        check_contains(t.invalid, "tpm-crb interface");
        tpm_intent_done(&t);
        intent_of("{\"persistent\":true}", "{\"vtpm-agent.io/tpm-version\":\"1.2\",\"vtpm-agent.io/tpm-model\":\"tpm-crb\"}",
                  &t);
        check_contains(t.invalid, "needs model tpm-tis");
        tpm_intent_done(&t);
        /* No TPM: annotations are not its business. */
        intent_of(NULL, "{\"vtpm-agent.io/tpm-version\":\"3.0\"}", &t);
        check(!t.has_tpm && !t.invalid);
        tpm_intent_done(&t);
        /* A very long value is cut in the message. */
        char big[600];
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        _cleanup_free_ char *ann = xasprintf("{\"vtpm-agent.io/tpm-version\":\"%s\"}", big);
        intent_of("{}", ann, &t);
        check(t.invalid && strlen(t.invalid) < 300);
        tpm_intent_done(&t);
}

static void test_intent_trimmed_vm(void) {
        /* The informer caches vm_trim()'s output: the intent must read the same. */
        json_t *vm = parse("{\"metadata\":{\"name\":\"v\",\"namespace\":\"n\",\"uid\":\"u\",\"generation\":3,"
                           "\"annotations\":{\"other\":\"x\",\"vtpm-agent.io/tpm-version\":\"3.0\"},"
                           "\"labels\":{\"a\":\"b\"}},"
                           "\"spec\":{\"runStrategy\":\"Always\",\"template\":{\"spec\":{\"domain\":{\"devices\":"
                           "{\"tpm\":{\"persistent\":true},\"disks\":[1,2,3]}}}}},\"status\":{\"x\":1}}");
        json_t *t = vm_trim(vm);
        check(json_object_get(json_object_get(t, "metadata"), "labels") == NULL);
        json_t *ann = json_object_get(json_object_get(t, "metadata"), "annotations");
        check(json_object_get(ann, "other") == NULL);
        check_str_eq(json_string_value(json_object_get(ann, "vtpm-agent.io/tpm-version")), "3.0");
        check(json_object_get(t, "status") == NULL);
        tpm_intent a, b;
        vm_tpm_intent(vm, &a);
        vm_tpm_intent(t, &b);
        check(a.has_tpm == b.has_tpm && a.persistent == b.persistent);
        check(a.invalid && b.invalid && strcmp(a.invalid, b.invalid) == 0);
        tpm_intent_done(&a);
        tpm_intent_done(&b);
        json_decref(t);
        json_decref(vm);
}

static bool dns_label_ok(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' || s[i] == '.'))
                        return false;
        return true;
}

static void test_names_short(void) {
        _cleanup_free_ char *p = state_pvc_name("win11");
        check_str_eq(p, "persistent-state-for-win11");
        _cleanup_free_ char *l = vm_label_value("win11");
        check_str_eq(l, "win11");
        /* Exactly at the limits: unchanged. */
        char n232[233];
        memset(n232, 'a', 232);
        n232[232] = 0;
        _cleanup_free_ char *p232 = state_pvc_name(n232);
        check_int_eq(strlen(p232), 253);
        check(strncmp(p232 + 21, n232, 232) == 0);
        char n63[64];
        memset(n63, 'b', 63);
        n63[63] = 0;
        _cleanup_free_ char *l63 = vm_label_value(n63);
        check_str_eq(l63, n63);
}

static void test_names_long(void) {
        char name[254];
        for (int i = 0; i < 253; i++)
                name[i] = "abcdefghij-klmnopqrstuvwxyz.0123456789"[i % 38];
        name[253] = 0;
        for (size_t len = 233; len <= 253; len += 4) {
                char n[254];
                memcpy(n, name, len);
                n[len] = 0;
                /* Names may not end with - or .; skip such fixtures, they are not valid VM names. */
                if (!isalnum((unsigned char)n[len - 1]))
                        continue;
                _cleanup_free_ char *p = state_pvc_name(n), *p2 = state_pvc_name(n);
                _cleanup_free_ char *l = vm_label_value(n), *l2 = vm_label_value(n);
                check(strlen(p) <= 253);
                check(strlen(l) <= 63);
                check_str_eq(p, p2); /* deterministic */
                check_str_eq(l, l2);
                check(strncmp(p, "persistent-state-for-", 21) == 0);
                check(dns_label_ok(p));
                check(dns_label_ok(l));
                /* hash suffix: "-" and 10 hex digits */
                size_t pl = strlen(p);
                check(p[pl - 11] == '-');
                for (size_t i = pl - 10; i < pl; i++)
                        check(isxdigit((unsigned char)p[i]));
        }
        /* Two names with the same 240-character prefix get different names. */
        char a[251], b[251];
        memset(a, 'v', 250);
        a[250] = 0;
        memcpy(b, a, sizeof(a));
        b[249] = 'w';
        _cleanup_free_ char *pa = state_pvc_name(a), *pb = state_pvc_name(b);
        _cleanup_free_ char *la = vm_label_value(a), *lb = vm_label_value(b);
        check(strcmp(pa, pb) != 0);
        check(strcmp(la, lb) != 0);
        /* A cut that would end in '-' or '.' is shortened further. */
        char d[241];
        memset(d, 'd', 240);
        d[240] = 0;
        d[220] = d[219] = '-'; /* the last kept characters before the hash for a 253 budget */
        _cleanup_free_ char *pd = state_pvc_name(d);
        check(dns_label_ok(pd));
        check(strstr(pd, "--") == NULL);
        char e[100];
        memset(e, 'e', 99);
        e[99] = 0;
        e[51] = '.';
        e[50] = '-';
        _cleanup_free_ char *le = vm_label_value(e);
        check(strlen(le) <= 63);
        check(dns_label_ok(le));
        check(strstr(le, "-.") == NULL && strstr(le, ".-") == NULL);
}

static void test_controller_ref(void) {
        json_t *o = parse("{\"metadata\":{\"ownerReferences\":[{\"kind\":\"A\",\"uid\":\"1\"},"
                          "{\"kind\":\"VirtualMachine\",\"uid\":\"2\",\"controller\":true}]}}");
        json_t *r = controller_ref(o);
        check_str_eq(json_string_value(json_object_get(r, "uid")), "2");
        json_decref(o);
        o = parse("{\"metadata\":{\"ownerReferences\":[{\"kind\":\"A\",\"uid\":\"1\",\"controller\":false}]}}");
        check(controller_ref(o) == NULL);
        json_decref(o);
        o = parse("{\"metadata\":{}}");
        check(controller_ref(o) == NULL);
        json_decref(o);
}

static void test_pvc_trim(void) {
        json_t *p = parse("{\"metadata\":{\"name\":\"p\",\"namespace\":\"n\",\"annotations\":{\"a\":\"b\"},"
                          "\"managedFields\":[1]},\"spec\":{\"accessModes\":[\"ReadWriteOnce\"],\"volumeMode\":"
                          "\"Filesystem\",\"storageClassName\":\"c\",\"resources\":{\"requests\":{\"storage\":"
                          "\"10Mi\"}}},\"status\":{\"phase\":\"Bound\"}}");
        json_t *t = pvc_trim(p);
        check(json_object_get(json_object_get(t, "metadata"), "annotations") == NULL);
        check(json_object_get(json_object_get(t, "metadata"), "managedFields") == NULL);
        check_str_eq(json_string_value(json_object_get(t, "phase")), "Bound");
        check_str_eq(json_string_value(json_object_get(json_object_get(t, "spec"), "storage")), "10Mi");
        check_str_eq(json_string_value(json_object_get(json_object_get(t, "spec"), "storageClassName")), "c");
        json_decref(t);
        json_decref(p);
}

int main(void) {
        return tap_run((tap_case[]){TAP_CASE(test_intent_basic), TAP_CASE(test_intent_bad_input),
                                    TAP_CASE(test_intent_annotations), TAP_CASE(test_template_annotations),
                                    TAP_CASE(test_intent_trimmed_vm),
                                    TAP_CASE(test_names_short), TAP_CASE(test_names_long),
                                    TAP_CASE(test_controller_ref), TAP_CASE(test_pvc_trim), {0}});
}
