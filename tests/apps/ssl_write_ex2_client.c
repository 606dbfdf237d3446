/* A TLS client that writes its requests with SSL_write_ex2 (OpenSSL >= 3.3),
 * looked up at run time (the build host's OpenSSL 3.0 has no such function):
 * run through Debian 13's loader, it calls that OpenSSL's SSL_write_ex2
 * directly, as QUIC-era programs do.  N keep-alive GETs of PATH with an
 * x-api-key header; prints "STATUS BODY_LEN" per response.
 * usage: ssl_write_ex2_client HOST PORT PATH KEY N */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*write_ex2_fn)(SSL *, const void *, size_t, uint64_t, size_t *);

/* Reads one HTTP/1.1 response (Content-Length framed) into buf. */
static int read_response(SSL *s, char *buf, size_t cap, int *status, size_t *body_len) {
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        size_t n = 0;
        if (have + 1 >= cap || !SSL_read_ex(s, buf + have, cap - have - 1, &n)) return -1;
        have += n;
        buf[have] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    size_t head = (size_t)(end + 4 - buf);
    char *cl = strcasestr(buf, "\r\ncontent-length:");
    if (!cl || cl > end || sscanf(buf, "HTTP/1.1 %d", status) != 1) return -1;
    size_t len = strtoul(cl + 17, NULL, 10);
    while (have < head + len) {
        size_t n = 0;
        if (have + 1 >= cap || !SSL_read_ex(s, buf + have, cap - have - 1, &n)) return -1;
        have += n;
    }
    *body_len = len;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT PATH KEY N\n", argv[0]);
        return 2;
    }
    write_ex2_fn write_ex2 = (write_ex2_fn)dlsym(RTLD_DEFAULT, "SSL_write_ex2");
    if (!write_ex2) {
        fprintf(stderr, "this OpenSSL has no SSL_write_ex2 (run it with OpenSSL >= 3.3)\n");
        return 2;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        perror("connect");
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL *s = SSL_new(ctx);
    SSL_set_fd(s, fd);
    if (SSL_connect(s) != 1) {
        fprintf(stderr, "TLS handshake failed\n");
        return 1;
    }
    static char buf[1 << 20];
    for (int i = 0; i < atoi(argv[5]); i++) {
        char req[4096];
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: localhost\r\nx-api-key: %s\r\n\r\n", argv[3], argv[4]);
        size_t written = 0;
        if (n <= 0 || (size_t)n >= sizeof req || write_ex2(s, req, (size_t)n, 0, &written) != 1 ||
            written != (size_t)n) {
            fprintf(stderr, "SSL_write_ex2 failed\n");
            return 1;
        }
        int status = 0;
        size_t body_len = 0;
        if (read_response(s, buf, sizeof buf, &status, &body_len)) {
            fprintf(stderr, "bad response\n");
            return 1;
        }
        printf("%d %zu\n", status, body_len);
        fflush(stdout);
    }
    SSL_shutdown(s);
    SSL_free(s);
    SSL_CTX_free(ctx);
    close(fd);
    return 0;
}
