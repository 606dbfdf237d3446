/* Event cost: nanoseconds per 64-byte SSL_write/SSL_read on a loopback TLS
 * connection.  Compiled by `cargo xtask bench` (event_cost) with
 * `cc -O2 evcost.c -lssl -lcrypto -lpthread`.
 *
 *   evcost CERT KEY PORT ITERATIONS
 *
 * A server thread and the client (main thread) ping-pong 64 bytes: client
 * SSL_write, server SSL_read, server SSL_write, client SSL_read.  The calls
 * are strictly serialised, so elapsed / (4 * ITERATIONS) is the time per SSL
 * call, and the difference with and without the sensor is what one probed
 * call costs.  Prints one JSON line.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64
#define WARMUP 1000

static long iterations;
static int listen_fd;
static SSL_CTX *server_ctx;

static void die(const char *what) {
    fprintf(stderr, "evcost: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void full_read(SSL *ssl, char *buf) {
    int got = 0;
    while (got < MSG) {
        int n = SSL_read(ssl, buf + got, MSG - got);
        if (n <= 0) die("SSL_read failed");
        got += n;
    }
}

static void full_write(SSL *ssl, const char *buf) {
    if (SSL_write(ssl, buf, MSG) != MSG) die("SSL_write failed");
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void *server(void *arg) {
    (void)arg;
    int fd = accept(listen_fd, NULL, NULL);
    if (fd < 0) die("accept failed");
    nodelay(fd);
    SSL *ssl = SSL_new(server_ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) die("SSL_accept failed");
    char buf[MSG];
    for (long i = 0; i < iterations + WARMUP; i++) {
        full_read(ssl, buf);
        full_write(ssl, buf);
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: evcost CERT KEY PORT ITERATIONS\n");
        return 2;
    }
    int port = atoi(argv[3]);
    iterations = atol(argv[4]);
    if (port <= 0 || iterations <= 0) die("bad PORT or ITERATIONS");

    server_ctx = SSL_CTX_new(TLS_server_method());
    if (!server_ctx) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(server_ctx, TLS1_3_VERSION);
    SSL_CTX_set_num_tickets(server_ctx, 0);
    if (SSL_CTX_use_certificate_file(server_ctx, argv[1], SSL_FILETYPE_PEM) != 1)
        die("cannot load the certificate");
    if (SSL_CTX_use_PrivateKey_file(server_ctx, argv[2], SSL_FILETYPE_PEM) != 1)
        die("cannot load the key");

    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) != 0) die("bind failed (port in use?)");
    if (listen(listen_fd, 1) != 0) die("listen failed");

    pthread_t t;
    pthread_create(&t, NULL, server, NULL);

    SSL_CTX *client_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(client_ctx, TLS1_3_VERSION);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect failed");
    nodelay(fd);
    SSL *ssl = SSL_new(client_ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) die("SSL_connect failed");

    char msg[MSG], back[MSG];
    memset(msg, 'x', sizeof msg);
    for (long i = 0; i < WARMUP; i++) {
        full_write(ssl, msg);
        full_read(ssl, back);
    }
    double t0 = now_s();
    for (long i = 0; i < iterations; i++) {
        full_write(ssl, msg);
        full_read(ssl, back);
    }
    double elapsed = now_s() - t0;
    pthread_join(t, NULL);
    SSL_free(ssl);
    close(fd);
    printf("{\"iterations\":%ld,\"calls\":%ld,\"seconds\":%.9f,\"ns_per_call\":%.3f}\n",
           iterations, 4 * iterations, elapsed, elapsed * 1e9 / (4.0 * iterations));
    return 0;
}
