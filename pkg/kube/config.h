/* SPDX-License-Identifier: Apache-2.0 */
/* Where the API server is and how to authenticate to it: from a kubeconfig
 * file, or from the in-cluster service-account files.
 *
 * Secrets held here (bearer token, client key) are wiped when freed and are
 * never formatted into errors. A token file is remembered by path so the
 * client can re-read it when the kubelet rotates a projected token. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

typedef struct kube_config {
        char *server;           /* "https://host:port", no trailing slash */
        char *tls_server_name;  /* optional SNI / verification override */
        char *ca_pem;           /* CA bundle (PEM) or NULL for the system store */
        size_t ca_pem_len;
        char *ca_origin;        /* where the CA came from, for messages */
        char *client_cert_pem;  /* client certificate (PEM) or NULL */
        size_t client_cert_len;
        char *client_key_pem;   /* secret: client key (PEM) or NULL */
        size_t client_key_len;
        char *token;            /* secret: static bearer token or NULL */
        char *token_file;       /* re-read on change; wins over token */
        char *namespace;        /* context namespace, or the pod's namespace */
        bool insecure_skip_tls_verify; /* only ever true when set explicitly */
        char *origin;           /* "kubeconfig /path (context x)" or "in-cluster" */
} kube_config;

/* Parse a kubeconfig given as text. `base_dir` resolves relative file paths
 * (as kubectl does: relative to the kubeconfig's directory). `context` NULL
 * means current-context. */
int kube_config_parse(const char *data, size_t len, const char *name, const char *base_dir,
                      const char *context, kube_config **ret, vt_error **err);
int kube_config_load_file(const char *path, const char *context, kube_config **ret, vt_error **err);

/* In-cluster: KUBERNETES_SERVICE_HOST/PORT and the service-account directory
 * (`sa_dir` NULL means /var/run/secrets/kubernetes.io/serviceaccount). */
int kube_config_load_incluster(const char *sa_dir, kube_config **ret, vt_error **err);

/* The usual order: explicit path, $KUBECONFIG, in-cluster, ~/.kube/config. */
int kube_config_load_default(const char *explicit_path, kube_config **ret, vt_error **err);

void kube_config_free(kube_config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(kube_config *, kube_config_free)
#define _cleanup_kube_config_ _cleanup_(kube_config_freep)
