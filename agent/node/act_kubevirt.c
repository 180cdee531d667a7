/* SPDX-License-Identifier: Apache-2.0 */
/* The bring-up's steps for the TPM state KubeVirt's own swtpm left on the
 * volume (tpm/kubevirt_state.h): a VM that ran before the agent served it
 * keeps its TPM. Taken over once: the plaintext is copied to the volume's
 * root, where the key step encrypts it in place as any unencrypted state;
 * then the ciphertext replaces the plaintext in KubeVirt's directory. A
 * marker on the volume (the firmware uuid and the plaintext's digest, no
 * TPM content) carries the second half over a crash in between. A VM whose
 * TPM the agent made gets a note in KubeVirt's place instead, for the same
 * reason: a KubeVirt swtpm started without the agent fails on it rather
 * than making a new, empty TPM. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileat.h"
#include "base/log.h"
#include "node/act.h"
#include "tpm/kubevirt_state.h"

DEFINE_JSON_CLEANUP

#define TAKEOVER_MARKER "vtpm-kubevirt-takeover.json"
#define ROOT_PERMALL "tpm2-00.permall"
#define ROOT_HEADER "vtpm-key.json"

static bool exists_beneath(int dfd, const char *name) {
        _cleanup_close_ int fd = openat_beneath(dfd, name, O_PATH, 0);
        return fd >= 0;
}

static void hex(const uint8_t *b, size_t n, char *out) {
        for (size_t i = 0; i < n; i++)
                snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static bool unhex(const char *s, uint8_t *b, size_t n) {
        if (!s || strlen(s) != 2 * n)
                return false;
        for (size_t i = 0; i < n; i++) {
                unsigned v;
                if (sscanf(s + 2 * i, "%2x", &v) != 1)
                        return false;
                b[i] = (uint8_t)v;
        }
        return true;
}

bool step_take_over_kubevirt_state(bring_up *b, kube_outcome *ret) {
        /* Only ever at the volume's root: a generation exists only after a
         * migration of the agent's own state. */
        if (!b->d->persistent || b->l->generation)
                return true;
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_close_ int dfd = dir_open_nofollow(b->host_state, &err);
        if (dfd < 0) {
                *ret = kube_failed(TAKE_PTR(err));
                return false;
        }
        /* The agent's own state (or a take-over under way): nothing to take. */
        if (exists_beneath(dfd, ROOT_PERMALL) || exists_beneath(dfd, ROOT_HEADER) ||
            exists_beneath(dfd, TAKEOVER_MARKER))
                return true;
        _cleanup_(kubevirt_state_done) kubevirt_state kv = {0};
        int r = kubevirt_state_find(dfd, &kv, &err);
        if (r == 0)
                return true;
        if (r < 0) {
                *ret = node_halt(b->nc, b->l, NR_STATE_UNREADABLE, err ? err->msg : NULL, &err);
                return false;
        }
        char digest[65];
        hex(kv.sha256, sizeof(kv.sha256), digest);
        _cleanup_json_ json_t *marker = json_pack("{s:s, s:s}", "firmwareUUID", kv.uuid, "sha256", digest);
        _cleanup_free_ char *mtext = json_dumps(marker, JSON_COMPACT);
        /* The marker first: a crash after the copy still finishes the take-over. */
        if (write_file_beneath(dfd, TAKEOVER_MARKER, mtext, strlen(mtext), 0600, NULL, NULL, &err) < 0 ||
            write_file_beneath(dfd, ROOT_PERMALL, kv.data, kv.size, 0600, NULL, NULL, &err) < 0) {
                vt_error_prefix(&err, -EIO, "taking over KubeVirt's TPM state: ");
                *ret = kube_failed(TAKE_PTR(err));
                return false;
        }
        _cleanup_free_ char *m = xasprintf("took over the TPM state KubeVirt's swtpm left in %s/%s/tpm2 (plaintext); "
                                           "it is encrypted before swtpm starts",
                                           KUBEVIRT_STATE_DIR, kv.uuid);
        node_keys_event(b->nc, b->l, false, "KubeVirtStateTakenOver", m);
        return true;
}

bool step_retire_kubevirt_plaintext(bring_up *b, kube_outcome *ret) {
        if (!b->d->persistent || !b->dek || b->l->generation)
                return true; /* not encrypted: KubeVirt's copy is no worse than ours */
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_close_ int dfd = dir_open_nofollow(b->host_state, &err);
        if (dfd < 0 || !exists_beneath(dfd, TAKEOVER_MARKER))
                return true;
        _cleanup_free_ char *mtext = NULL, *cipher = NULL;
        size_t mlen = 0, clen = 0;
        int r = read_file_beneath(dfd, TAKEOVER_MARKER, 4096, &mtext, &mlen, &err);
        _cleanup_json_ json_t *marker = r >= 0 ? json_loadb(mtext, mlen, 0, NULL) : NULL;
        const char *uuid = json_string_value(json_object_get(marker, "firmwareUUID"));
        uint8_t was[32];
        if (r >= 0 && (!uuid || !unhex(json_string_value(json_object_get(marker, "sha256")), was, sizeof(was))))
                r = vt_error_set(&err, EBADMSG, "%s is not the agent's", TAKEOVER_MARKER);
        if (r >= 0)
                r = read_file_beneath(dfd, ROOT_PERMALL, KUBEVIRT_STATE_MAX, &cipher, &clen, &err);
        if (r >= 0)
                r = kubevirt_state_replace(dfd, uuid, was, cipher, clen, &err);
        if (r < 0) {
                /* The VM's state is encrypted and whole; only KubeVirt's old copy stays: said, retried next start. */
                _cleanup_free_ char *m = xasprintf("KubeVirt's plaintext TPM state could not be replaced by its "
                                                   "ciphertext (retried at the next start): %s",
                                                   err ? err->msg : strerror(-r));
                node_keys_event(b->nc, b->l, true, "KubeVirtStatePlaintextLeft", m);
                return true;
        }
        _cleanup_free_ char *m = r == 1 ? xasprintf("KubeVirt's plaintext TPM state in %s/%s/tpm2 is now its "
                                                    "ciphertext: a swtpm without the key cannot load it",
                                                    KUBEVIRT_STATE_DIR, uuid)
                                        : xasprintf("KubeVirt's TPM state in %s/%s/tpm2 changed since it was taken "
                                                    "over, or is gone: left as it is",
                                                    KUBEVIRT_STATE_DIR, uuid);
        node_keys_event(b->nc, b->l, r != 1, r == 1 ? "KubeVirtStateEncrypted" : "KubeVirtStateChanged", m);
        if (unlinkat(dfd, TAKEOVER_MARKER, 0) < 0)
                log_kv(LOG_LEVEL_WARN, "cannot remove the take-over marker", "vm", b->l->vm_name, NULL);
        return true;
}

#define GUARD_NOTE                                                                                                    \
        "vtpm-agent: this VM's TPM state is encrypted at the root of this volume and is served by vtpm-agent.\n"      \
        "A swtpm without vtpm-agent's key must not start here: it would make a new, empty TPM.\n"                  \
        "Start the VM with vtpm-agent's KubeVirt Plugin (deploy/kubevirt-plugin) installed.\n"

bool step_guard_kubevirt_place(bring_up *b, kube_outcome *ret) {
        const char *uuid = json_string_value(json_object_get(b->o->vm, "firmwareUUID"));
        if (!b->d->persistent || !b->dek || !uuid || !kubevirt_state_uuid_valid(uuid))
                return true;
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_close_ int dfd = dir_open_nofollow(b->published, &err); /* KubeVirt's place is at the root */
        int r = dfd < 0 ? dfd : kubevirt_state_guard(dfd, uuid, GUARD_NOTE, strlen(GUARD_NOTE), &err);
        if (r < 0)
                /* The VM's own state is whole: only the guard is missing; said, tried again next start. */
                log_kv(LOG_LEVEL_WARN, "cannot guard KubeVirt's swtpm directory on the state volume", "vm",
                       b->l->vm_name, "error", err ? err->msg : strerror(-r), NULL);
        else if (r == 1)
                log_kv(LOG_LEVEL_INFO, "KubeVirt's swtpm directory on the state volume guarded", "vm", b->l->vm_name,
                       "firmwareUUID", uuid, NULL);
        return true;
}
