/* Event cost: nanoseconds per 64-byte SSL_write/SSL_read on a loopback TLS
 * connection.  Compiled by `cargo xtask bench` (event_cost) with
 * `cc -O2 evcost.c -lssl -lcrypto -lpthread`.
 *
 *   evcost CERT KEY PORT ITERATIONS
 *
 * After the handshake (server side on a helper thread), ONE thread drives
 * both ends: client SSL_write, server SSL_read, server SSL_write, client
 * SSL_read, 64 bytes each.  Loopback TCP delivers during send(), so no call
 * waits for another thread and no context switch is measured: the time per
 * call is the SSL call itself (+ syscalls + probes).  Reported per call as
 * wall time and as this thread's CPU time (CLOCK_THREAD_CPUTIME_ID, which a
 * uprobe's trap handling is charged to, and which time spent preempted by
 * other processes on a shared machine is not).  Prints one JSON line.
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

static SSL *server_ssl;

/* The server side of the handshake only; the main thread does the rest. */
static void *server(void *arg) {
    (void)arg;
    int fd = accept(listen_fd, NULL, NULL);
    if (fd < 0) die("accept failed");
    nodelay(fd);
    server_ssl = SSL_new(server_ctx);
    SSL_set_fd(server_ssl, fd);
    if (SSL_accept(server_ssl) != 1) die("SSL_accept failed");
    return NULL;
}

static double now_s(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void round_trip(SSL *client, SSL *srv, const char *msg, char *buf) {
    full_write(client, msg);
    full_read(srv, buf);
    full_write(srv, buf);
    full_read(client, buf);
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

    pthread_join(t, NULL);
    char msg[MSG], buf[MSG];
    memset(msg, 'x', sizeof msg);
    for (long i = 0; i < WARMUP; i++) round_trip(ssl, server_ssl, msg, buf);
    double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
    for (long i = 0; i < iterations; i++) round_trip(ssl, server_ssl, msg, buf);
    double wall = now_s(CLOCK_MONOTONIC) - w0, cpu = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    SSL_free(ssl);
    SSL_free(server_ssl);
    close(fd);
    double calls = 4.0 * iterations;
    printf("{\"iterations\":%ld,\"calls\":%ld,\"seconds\":%.9f,\"cpu_seconds\":%.9f,"
           "\"ns_per_call\":%.3f,\"cpu_ns_per_call\":%.3f}\n",
           iterations, 4 * iterations, wall, cpu, wall * 1e9 / calls, cpu * 1e9 / calls);
    return 0;
}
