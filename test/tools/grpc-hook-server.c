/* SPDX-License-Identifier: Apache-2.0 */
/* Test tool (not product code): the node-hook gRPC server (pkg/grpc) with a
 * handler that prints each request on stdout, one line, and succeeds, or
 * fails every call with --fail's message (EBUSY: UNAVAILABLE). For
 * test/tools/grpc-interop.sh, where KubeVirt's own client calls it.
 *
 *   grpc-hook-server --socket PATH [--fail MESSAGE] [--allow-uid UID]
 *
 * Prints "listening PATH" when ready, then per call
 *   request hookPoint=H node=N vmi=NAMESPACE/NAME vmiBytes=B
 * and runs until SIGTERM or SIGINT. */
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "grpc/listen.h"
#include "grpc/server.h"

static const char *fail_message;

static int handle(const nodehook_request *req, void *userdata, vt_error **err) {
        json_t *vmi = json_loadb(req->vmi, req->vmi_len, 0, NULL);
        const char *ns = NULL, *name = NULL;
        (void)json_unpack(vmi, "{s:{s?s,s?s}}", "metadata", "namespace", &ns, "name", &name);
        printf("request hookPoint=%s node=%s vmi=%s/%s vmiBytes=%zu\n", req->hook_point, req->node_name,
               ns ? ns : "-", name ? name : "-", req->vmi_len);
        fflush(stdout);
        json_decref(vmi);
        if (fail_message)
                return vt_error_set(err, EBUSY, "%s", fail_message);
        return 0;
}

static void on_error(const vt_error *e, void *userdata) {
        fprintf(stderr, "grpc-hook-server: %s\n", e->msg);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                             {"fail", required_argument, NULL, 'f'},
                                             {"allow-uid", required_argument, NULL, 'u'}, {0}};
        const char *path = NULL;
        grpc_server_options o = {.handler = handle, .on_error = on_error};
        for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
                if (c == 's')
                        path = optarg;
                else if (c == 'f')
                        fail_message = optarg;
                else if (c == 'u')
                        o.allow_uid = (uid_t)strtoul(optarg, NULL, 10);
                else
                        return 2;
        }
        if (!path) {
                fprintf(stderr, "usage: grpc-hook-server --socket PATH [--fail MESSAGE] [--allow-uid UID]\n");
                return 2;
        }
        /* Blocked before any thread starts, so every thread inherits the mask
         * and sigwait() below is the only taker. */
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        pthread_sigmask(SIG_BLOCK, &ss, NULL);
        vt_error *err = NULL;
        int fd = -1;
        grpc_server *s = NULL;
        if (grpc_listen_unix(path, 16, &fd, &err) < 0 || grpc_server_start(fd, &o, &s, &err) < 0) {
                fprintf(stderr, "grpc-hook-server: %s\n", err->msg);
                return 1;
        }
        printf("listening %s\n", path);
        fflush(stdout);
        int sig = 0;
        sigwait(&ss, &sig);
        grpc_server_stop(s);
        close(fd);
        unlink(path);
        return 0;
}
