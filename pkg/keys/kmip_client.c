/* SPDX-License-Identifier: Apache-2.0 */
#include "kmip_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "base/alloc.h"

struct kmip_client {
        char *host, *server_name;
        uint16_t port;
        usec_t timeout;
        SSL_CTX *ctx;
        SSL *ssl;
        int fd;
};

/* Requests are small; the largest is Encrypt with a 48-byte plaintext. */
#define KMIP_REQ_MAX 2048

/* The newest OpenSSL error as text (never contains key bytes: it names
 * files, functions and reasons). */
static const char *ssl_err(void) {
        unsigned long e = ERR_peek_last_error();
        const char *s = e ? ERR_reason_error_string(e) : NULL;
        return s ? s : "unknown error";
}

int kmip_client_new(const kmip_config *cfg, kmip_client **ret, vt_error **err) {
        assert_return(cfg && cfg->host && cfg->ca_file && cfg->cert_file && cfg->key_file && ret, -EINVAL);
        ERR_clear_error();
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx)
                return vt_error_set(err, ENOMEM, "KMIP: cannot create TLS context");
        int r = 0;
        if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
                r = vt_error_set(err, EINVAL, "KMIP: cannot require TLS 1.2");
        else if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1)
                r = vt_error_set(err, EINVAL, "KMIP: cannot load CA file %s: %s", cfg->ca_file, ssl_err());
        else if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1)
                r = vt_error_set(err, EINVAL, "KMIP: cannot load client certificate %s: %s", cfg->cert_file,
                                 ssl_err());
        else if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1)
                r = vt_error_set(err, EINVAL, "KMIP: cannot load client key %s: %s", cfg->key_file, ssl_err());
        else if (SSL_CTX_check_private_key(ctx) != 1)
                r = vt_error_set(err, EINVAL, "KMIP: client key %s does not match certificate %s",
                                 cfg->key_file, cfg->cert_file);
        if (r < 0) {
                SSL_CTX_free(ctx);
                ERR_clear_error();
                return r;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        /* Give OpenSSL's record buffers back between messages, so decrypted
         * replies (which may hold key bytes) do not linger in them. */
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_AUTO_RETRY);

        kmip_client *c = xnew(kmip_client, 1);
        c->host = xstrdup(cfg->host);
        c->server_name = xstrdup(cfg->server_name ? cfg->server_name : cfg->host);
        c->port = cfg->port ? cfg->port : 5696;
        c->timeout = cfg->timeout ? cfg->timeout : 10 * USEC_PER_SEC;
        c->ctx = ctx;
        c->fd = -1;
        *ret = c;
        return 0;
}

void kmip_client_disconnect(kmip_client *c) {
        if (!c)
                return;
        if (c->ssl) {
                SSL_free(c->ssl);
                c->ssl = NULL;
        }
        if (c->fd >= 0) {
                close(c->fd);
                c->fd = -1;
        }
}

void kmip_client_free(kmip_client *c) {
        if (!c)
                return;
        kmip_client_disconnect(c);
        SSL_CTX_free(c->ctx);
        free(c->host);
        free(c->server_name);
        free(c);
}

static int tcp_connect(kmip_client *c, vt_error **err) {
        char port[8];
        snprintf(port, sizeof(port), "%u", (unsigned)c->port);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
        int g = getaddrinfo(c->host, port, &hints, &ai);
        if (g != 0)
                return vt_error_set(err, EHOSTUNREACH, "KMIP: cannot resolve %s: %s", c->host, gai_strerror(g));

        int last = ECONNREFUSED;
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
                _cleanup_close_ int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0) {
                        last = errno;
                        continue;
                }
                if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
                        if (errno != EINPROGRESS) {
                                last = errno;
                                continue;
                        }
                        struct pollfd p = {.fd = fd, .events = POLLOUT};
                        int n;
                        do
                                n = poll(&p, 1, (int)(c->timeout / USEC_PER_MSEC));
                        while (n < 0 && errno == EINTR);
                        if (n == 0) {
                                last = ETIMEDOUT;
                                continue;
                        }
                        int soerr = 0;
                        socklen_t sl = sizeof(soerr);
                        if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
                                soerr = errno;
                        if (soerr != 0) {
                                last = soerr;
                                continue;
                        }
                }
                /* Blocking from here on, with a timeout on every read and write. */
                int fl = fcntl(fd, F_GETFL);
                (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
                struct timeval tv = {.tv_sec = (time_t)(c->timeout / USEC_PER_SEC),
                                     .tv_usec = (suseconds_t)(c->timeout % USEC_PER_SEC)};
                (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                int one = 1;
                (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                freeaddrinfo(ai);
                c->fd = TAKE_FD(fd);
                return 0;
        }
        freeaddrinfo(ai);
        return vt_error_errno(err, last, "KMIP: cannot connect to %s:%u", c->host, (unsigned)c->port);
}

/* An I/O failure's errno for the "unavailable" family. */
static int io_errno(void) {
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK)
                return ETIMEDOUT;
        if (e == 0 || e == EINTR)
                return ECONNRESET;
        return e;
}

/* Writing to a socket the peer closed raises SIGPIPE, and OpenSSL writes
 * from SSL_read and SSL_connect too (alerts). Library code must not depend on
 * the process ignoring SIGPIPE, so every TLS call runs with it blocked, and a
 * SIGPIPE it raised is swallowed (one already pending for someone else is
 * left alone). */
typedef struct sigpipe_guard {
        sigset_t old;
        bool was_pending;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g) {
        sigset_t set, pending;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &set, &g->old);
        sigpending(&pending);
        g->was_pending = sigismember(&pending, SIGPIPE);
}

static void sigpipe_restore(sigpipe_guard *g) {
        sigset_t set, pending;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        sigpending(&pending);
        if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
                struct timespec zero = {0};
                (void)sigtimedwait(&set, NULL, &zero);
        }
        pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

int kmip_client_connect(kmip_client *c, vt_error **err) {
        assert_return(c, -EINVAL);
        if (c->ssl)
                return 0;
        int r = tcp_connect(c, err);
        if (r < 0)
                return r;
        ERR_clear_error();
        c->ssl = SSL_new(c->ctx);
        if (!c->ssl) {
                kmip_client_disconnect(c);
                return vt_error_set(err, ENOMEM, "KMIP: cannot create TLS session");
        }
        SSL_set_fd(c->ssl, c->fd);
        /* Verify the server's name or address against its certificate. */
        struct in6_addr a6;
        struct in_addr a4;
        bool is_ip = inet_pton(AF_INET, c->server_name, &a4) == 1 || inet_pton(AF_INET6, c->server_name, &a6) == 1;
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
        if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, c->server_name) != 1
                  : (SSL_set1_host(c->ssl, c->server_name) != 1 ||
                     SSL_set_tlsext_host_name(c->ssl, c->server_name) != 1)) {
                kmip_client_disconnect(c);
                return vt_error_set(err, EINVAL, "KMIP: bad server name %s", c->server_name);
        }
        errno = 0;
        sigpipe_guard g;
        sigpipe_block(&g);
        int ok = SSL_connect(c->ssl);
        sigpipe_restore(&g);
        if (ok != 1) {
                long v = SSL_get_verify_result(c->ssl);
                int e = io_errno();
                const char *why = ssl_err();
                kmip_client_disconnect(c);
                ERR_clear_error();
                if (v != X509_V_OK)
                        return vt_error_set(err, EKEYREJECTED,
                                            "KMIP: certificate of %s:%u did not verify: %s", c->host,
                                            (unsigned)c->port, X509_verify_cert_error_string(v));
                if (e == ETIMEDOUT)
                        return vt_error_set(err, ETIMEDOUT, "KMIP: TLS handshake with %s:%u timed out", c->host,
                                            (unsigned)c->port);
                return vt_error_set(err, ECONNABORTED, "KMIP: TLS handshake with %s:%u failed: %s", c->host,
                                    (unsigned)c->port, why);
        }
        return 0;
}

static int write_all(kmip_client *c, const uint8_t *p, size_t n) {
        while (n > 0) {
                size_t w = 0;
                errno = 0;
                if (SSL_write_ex(c->ssl, p, n, &w) != 1)
                        return -io_errno();
                p += w;
                n -= w;
        }
        return 0;
}

static int read_all(kmip_client *c, uint8_t *p, size_t n) {
        while (n > 0) {
                size_t got = 0;
                errno = 0;
                if (SSL_read_ex(c->ssl, p, n, &got) != 1) {
                        int e = SSL_get_error(c->ssl, 0);
                        if (e == SSL_ERROR_ZERO_RETURN)
                                return -ECONNRESET;
                        return -io_errno();
                }
                p += got;
                n -= got;
        }
        return 0;
}

static const char *op_name(enum kmip_op op) {
        switch (op) {
        case KMIP_OP_CREATE:
                return "Create";
        case KMIP_OP_LOCATE:
                return "Locate";
        case KMIP_OP_GET:
                return "Get";
        case KMIP_OP_GET_ATTRIBUTES:
                return "GetAttributes";
        case KMIP_OP_ACTIVATE:
                return "Activate";
        case KMIP_OP_REVOKE:
                return "Revoke";
        case KMIP_OP_DESTROY:
                return "Destroy";
        case KMIP_OP_QUERY:
                return "Query";
        case KMIP_OP_ENCRYPT:
                return "Encrypt";
        case KMIP_OP_DECRYPT:
                return "Decrypt";
        }
        return "?";
}

/* Send one request, read and parse one reply. On success *ret_buf holds the
 * reply bytes (secure memory: Get and Decrypt replies carry key material)
 * and *ret_reply points into it. A failed KMIP result is returned as an
 * error naming the operation, the key id and the server's reason. */
static bool keys_io_error(int r) {
        return r == -EPIPE || r == -ECONNRESET || r == -ECONNABORTED || r == -ENOTCONN;
}

static int transact_locked(kmip_client *c, enum kmip_op op, const char *uid, const uint8_t *req, size_t req_len,
                           secmem **ret_buf, kmip_reply *ret_reply, vt_error **err, bool *ret_before_reply) {
        *ret_before_reply = false;
        int r = kmip_client_connect(c, err);
        if (r < 0)
                return r;
        r = write_all(c, req, req_len);
        if (r < 0) {
                *ret_before_reply = true;
                kmip_client_disconnect(c);
                return vt_error_errno(err, r, "KMIP: sending %s to %s:%u", op_name(op), c->host, (unsigned)c->port);
        }
        uint8_t hdr[TTLV_HEADER_SIZE];
        r = read_all(c, hdr, sizeof(hdr));
        if (r < 0) {
                *ret_before_reply = true;
                kmip_client_disconnect(c);
                return vt_error_errno(err, r, "KMIP: reading the %s reply from %s:%u", op_name(op), c->host,
                                      (unsigned)c->port);
        }
        uint32_t len = ttlv_be32(hdr + 4);
        if (hdr[0] != 0x42 || hdr[1] != 0x00 || hdr[2] != 0x7B || hdr[3] != TTLV_STRUCTURE || len % 8 != 0 ||
            len > KMIP_MAX_REPLY) {
                kmip_client_disconnect(c);
                return vt_error_set(err, EBADMSG, "KMIP: %s:%u sent no ResponseMessage (or one over %d bytes)",
                                    c->host, (unsigned)c->port, KMIP_MAX_REPLY);
        }
        _cleanup_secmem_ secmem *buf = NULL;
        r = secmem_new(TTLV_HEADER_SIZE + len, &buf, err);
        if (r < 0)
                return r;
        memcpy(buf->data, hdr, sizeof(hdr));
        r = read_all(c, buf->data + TTLV_HEADER_SIZE, len);
        if (r < 0) {
                kmip_client_disconnect(c);
                return vt_error_errno(err, r, "KMIP: reading the %s reply from %s:%u", op_name(op), c->host,
                                      (unsigned)c->port);
        }
        kmip_reply rep = {0};
        r = kmip_parse_reply(buf->data, buf->len, op, &rep, err);
        if (r < 0) {
                kmip_client_disconnect(c);
                return vt_error_prefix(err, r, "%s %s: ", op_name(op), uid ? uid : "");
        }
        if (rep.status != KMIP_STATUS_SUCCESS) {
                r = kmip_reason_to_errno(rep.reason);
                vt_error_set(err, -r, "KMIP %s%s%s refused by %s:%u: %s%s%s", op_name(op), uid ? " of key " : "",
                             uid ? uid : "", c->host, (unsigned)c->port, kmip_reason_name(rep.reason),
                             rep.message ? ": " : "", rep.message ? rep.message : "");
                kmip_reply_done(&rep);
                return r;
        }
        *ret_buf = TAKE_PTR(buf);
        *ret_reply = rep;
        return 0;
}

static int transact(kmip_client *c, enum kmip_op op, const char *uid, const uint8_t *req, size_t req_len,
                    secmem **ret_buf, kmip_reply *ret_reply, vt_error **err) {
        sigpipe_guard g;
        sigpipe_block(&g);
        /* A kept-alive connection may have been closed by the server (idle
         * timeout, restart) since the last request: if sending or the first
         * read fails on a reused connection, reconnect and send once more.
         * The server never saw the request on a connection it had closed. */
        bool reused = c->ssl != NULL;
        vt_error *first = NULL;
        bool before_reply = false;
        int r = transact_locked(c, op, uid, req, req_len, ret_buf, ret_reply, reused ? &first : err,
                                &before_reply);
        if (r < 0 && reused) {
                if (before_reply && keys_io_error(r)) {
                        vt_error_free(first);
                        r = transact_locked(c, op, uid, req, req_len, ret_buf, ret_reply, err, &before_reply);
                } else if (err && !*err) {
                        *err = first;
                } else {
                        vt_error_free(first);
                }
        }
        sigpipe_restore(&g);
        return r;
}

/* Build a request in secure memory: it may carry key bytes (Encrypt). */
static int request_buf(secmem **ret, vt_error **err) {
        return secmem_new(KMIP_REQ_MAX, ret, err);
}

/* Send the request the builder wrote into req (n bytes; n < 0: it did not
 * fit) and read the reply into *rep (its buffer in *buf). */
static int exchange(kmip_client *c, enum kmip_op op, const char *uid, secmem *req, int n, secmem **buf,
                    kmip_reply *rep, vt_error **err) {
        if (n < 0)
                return vt_error_set(err, -n, "KMIP: request does not fit (%d)", n);
        return transact(c, op, uid, req->data, (size_t)n, buf, rep, err);
}

/* Create (a new AES-256 key, optionally named) or Locate (by name): both
 * answer with a unique identifier. */
static int name_op(kmip_client *c, enum kmip_op op, const char *name, char **ret_uid, vt_error **err) {
        _cleanup_secmem_ secmem *req = NULL, *buf = NULL;
        int r = request_buf(&req, err);
        if (r < 0)
                return r;
        kmip_reply rep;
        int n = op == KMIP_OP_CREATE ? kmip_req_create_aes256(req->data, req->len, name)
                                     : kmip_req_locate_by_name(req->data, req->len, name);
        r = exchange(c, op, NULL, req, n, &buf, &rep, err);
        if (r < 0)
                return r;
        r = op == KMIP_OP_CREATE ? kmip_payload_uid(&rep, ret_uid, err) : kmip_payload_locate(&rep, ret_uid, err);
        kmip_reply_done(&rep);
        return r;
}

int kmip_create_aes256(kmip_client *c, const char *name, char **ret_uid, vt_error **err) {
        assert_return(c && ret_uid, -EINVAL);
        return name_op(c, KMIP_OP_CREATE, name, ret_uid, err);
}

static int simple_op(kmip_client *c, enum kmip_op op, const char *uid, vt_error **err) {
        assert_return(c && uid, -EINVAL);
        _cleanup_secmem_ secmem *req = NULL, *buf = NULL;
        int r = request_buf(&req, err);
        if (r < 0)
                return r;
        kmip_reply rep;
        int n = op == KMIP_OP_REVOKE ? kmip_req_revoke(req->data, req->len, uid)
                                     : kmip_req_uid_only(req->data, req->len, op, uid);
        r = exchange(c, op, uid, req, n, &buf, &rep, err);
        if (r < 0)
                return r;
        kmip_reply_done(&rep);
        return 0;
}

int kmip_activate(kmip_client *c, const char *uid, vt_error **err) {
        return simple_op(c, KMIP_OP_ACTIVATE, uid, err);
}

int kmip_revoke(kmip_client *c, const char *uid, vt_error **err) {
        return simple_op(c, KMIP_OP_REVOKE, uid, err);
}

int kmip_destroy(kmip_client *c, const char *uid, vt_error **err) {
        return simple_op(c, KMIP_OP_DESTROY, uid, err);
}

int kmip_locate_by_name(kmip_client *c, const char *name, char **ret_uid, vt_error **err) {
        assert_return(c && name && ret_uid, -EINVAL);
        return name_op(c, KMIP_OP_LOCATE, name, ret_uid, err);
}

int kmip_get_key(kmip_client *c, const char *uid, secmem **ret_key, vt_error **err) {
        assert_return(c && uid && ret_key, -EINVAL);
        _cleanup_secmem_ secmem *req = NULL, *buf = NULL;
        int r = request_buf(&req, err);
        if (r < 0)
                return r;
        kmip_reply rep;
        r = exchange(c, KMIP_OP_GET, uid, req, kmip_req_uid_only(req->data, req->len, KMIP_OP_GET, uid),
                     &buf, &rep, err);
        if (r < 0)
                return r;
        r = kmip_payload_get_key(&rep, ret_key, err);
        kmip_reply_done(&rep);
        if (r < 0)
                return vt_error_prefix(err, r, "Get %s: ", uid);
        return 0;
}

int kmip_get_names(kmip_client *c, const char *uid, char **names, size_t max, size_t *ret_n, vt_error **err) {
        assert_return(c && uid && ret_n, -EINVAL);
        _cleanup_secmem_ secmem *req = NULL, *buf = NULL;
        int r = request_buf(&req, err);
        if (r < 0)
                return r;
        kmip_reply rep;
        r = exchange(c, KMIP_OP_GET_ATTRIBUTES, uid, req, kmip_req_get_attribute(req->data, req->len, uid, "Name"),
                     &buf, &rep, err);
        if (r < 0)
                return r;
        r = kmip_payload_names(&rep, uid, names, max, ret_n, err);
        kmip_reply_done(&rep);
        return r;
}

static int crypt_op(kmip_client *c, enum kmip_op op, const char *uid, const uint8_t iv[16], const uint8_t *in,
                    size_t len, secmem **ret_out, vt_error **err) {
        assert_return(c && uid && iv && in && ret_out, -EINVAL);
        if (len == 0 || len > 1024)
                return vt_error_set(err, EINVAL, "KMIP %s: data length %zu out of range", op_name(op), len);
        _cleanup_secmem_ secmem *req = NULL, *buf = NULL;
        int r = request_buf(&req, err);
        if (r < 0)
                return r;
        kmip_reply rep;
        r = exchange(c, op, uid, req, kmip_req_crypt(req->data, req->len, op, uid, iv, in, len), &buf, &rep, err);
        if (r < 0)
                return r;
        const uint8_t *data;
        size_t dlen;
        r = kmip_payload_crypt(&rep, &data, &dlen, err);
        kmip_reply_done(&rep);
        if (r < 0)
                return vt_error_prefix(err, r, "%s %s: ", op_name(op), uid);
        if (dlen == 0)
                return vt_error_set(err, EBADMSG, "KMIP %s of key %s: empty result", op_name(op), uid);
        return secmem_dup(data, dlen, ret_out, err);
}

int kmip_encrypt_cbc(kmip_client *c, const char *uid, const uint8_t iv[16], const uint8_t *plain, size_t len,
                     uint8_t **ret_ct, size_t *ret_len, vt_error **err) {
        assert_return(ret_ct && ret_len, -EINVAL);
        _cleanup_secmem_ secmem *out = NULL;
        int r = crypt_op(c, KMIP_OP_ENCRYPT, uid, iv, plain, len, &out, err);
        if (r < 0)
                return r;
        /* CBC with PKCS#5 padding: the next multiple of 16, always. */
        if (out->len != (len / 16 + 1) * 16)
                return vt_error_set(err, EBADMSG, "KMIP Encrypt of key %s: %zu bytes of ciphertext for %zu of data",
                                    uid, out->len, len);
        *ret_ct = xmemdup(out->data, out->len);
        *ret_len = out->len;
        return 0;
}

int kmip_decrypt_cbc(kmip_client *c, const char *uid, const uint8_t iv[16], const uint8_t *ct, size_t len,
                     secmem **ret_plain, vt_error **err) {
        return crypt_op(c, KMIP_OP_DECRYPT, uid, iv, ct, len, ret_plain, err);
}

int kmip_query_operations(kmip_client *c, uint32_t *ops, size_t max, size_t *ret_n, vt_error **err) {
        assert_return(c && ops && ret_n, -EINVAL);
        _cleanup_secmem_ secmem *req = NULL, *buf = NULL;
        int r = request_buf(&req, err);
        if (r < 0)
                return r;
        kmip_reply rep;
        r = exchange(c, KMIP_OP_QUERY, NULL, req, kmip_req_query_operations(req->data, req->len), &buf, &rep, err);
        if (r < 0)
                return r;
        r = kmip_payload_query_ops(&rep, ops, max, ret_n, err);
        kmip_reply_done(&rep);
        return r;
}
