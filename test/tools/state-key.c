/* SPDX-License-Identifier: Apache-2.0 */
/* Test-bed tool (not product code): unwraps a VM's state key the way the
 * agent does (key header on the volume + the "secret" provider's KEK, read
 * with the caller's admin credentials) and writes it as hex to a file of
 * mode 0600, so a test can start a bare swtpm on a COPY of encrypted state
 * (`--key file=F,format=hex,mode=aes-256-cbc`). Also proves the header is
 * all a holder of the KEK needs: state and wrapped key travel together.
 *
 *   state-key --state-dir DIR --out FILE [--kubeconfig F] [--namespace NS (default: from the kekId)] */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "keys/header.h"
#include "keys/provider.h"
#include "kube/config.h"
#include "keys/provider_secret.h"
#include "resources.h"
#include "vmspec.h"

int main(int argc, char **argv) {
        static const struct option opts[] = {{"kubeconfig", required_argument, NULL, 'k'},
                                             {"namespace", required_argument, NULL, 'n'},
                                             {"state-dir", required_argument, NULL, 's'},
                                             {"out", required_argument, NULL, 'o'}, {0}};
        const char *kubeconfig = NULL, *ns = NULL, *dir = NULL, *out = NULL;
        for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
                if (c == 'k')
                        kubeconfig = optarg;
                else if (c == 'n')
                        ns = optarg;
                else if (c == 's')
                        dir = optarg;
                else if (c == 'o')
                        out = optarg;
                else
                        return 2;
        }
        if (!dir || !out) {
                fprintf(stderr, "usage: state-key --state-dir DIR --out FILE [--kubeconfig F] [--namespace NS]\n");
                return 2;
        }
        _cleanup_error_ vt_error *err = NULL;
        _cleanup_kube_config_ kube_config *cfg = NULL;
        _cleanup_kube_client_ kube_client *client = NULL;
        _cleanup_free_ char *path = xasprintf("%s/%s", dir, KEY_HEADER_FILE);
        key_header h = {0};
        _cleanup_(secmem_freep) secmem *dek = NULL;
        _cleanup_kek_provider_ kek_provider *p = NULL;
        if (key_header_read(path, &h, &err) < 0 || kube_config_load_default(kubeconfig, &cfg, &err) < 0 ||
            kube_client_new(cfg, "state-key", &client, &err) < 0) {
                fprintf(stderr, "state-key: %s\n", err->msg);
                return 1;
        }
        if (strcmp(h.provider, "secret") != 0) {
                fprintf(stderr, "state-key: provider %s: only the secret provider is supported here\n", h.provider);
                return 1;
        }
        /* The kekId names the KEK's namespace and the VM's:
         * "<ns>/vtpm-kek-<vm-ns>#<version>" (the agent derives the VM's from
         * where the volume is; this tool, run by an admin, believes the header). */
        _cleanup_free_ char *kek_ns = xstrndup(h.kek_id, strcspn(h.kek_id, "/"));
        const char *vm = strstr(h.kek_id, "/vtpm-kek-");
        _cleanup_free_ char *scope = vm ? xstrndup(vm + 10, strcspn(vm + 10, "#")) : xstrdup("");
        secret_provider_options o = {.client = client, .secrets = &res_secret, .namespace = ns ? ns : kek_ns,
                                     .label_key = LABEL_MANAGED_BY, .label_value = LABEL_MANAGER_VALUE};
        if (kek_provider_secret_new(&o, &p) < 0) {
                fprintf(stderr, "state-key: bad options for the secret provider\n");
                key_header_done(&h);
                return 1;
        }
        if (kek_provider_unwrap(p, scope, &h, &dek, &err) < 0) {
                fprintf(stderr, "state-key: %s\n", err->msg);
                key_header_done(&h);
                return 1;
        }
        key_header_done(&h);
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                perror("state-key: open");
                return 1;
        }
        for (size_t i = 0; i < dek->len; i++)
                dprintf(fd, "%02x", dek->data[i]);
        close(fd);
        return 0;
}
