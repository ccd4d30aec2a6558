/*
 * rsload: one compiled load generator for Redis, Redis Cluster and Memcached, so that
 * `readscale bench backends` drives all three with the same workload and the same
 * measuring code (redis-benchmark speaks only RESP; Debian ships no memcached load
 * generator that reports latency percentiles).
 *
 * Clients are closed loops (one request outstanding each): the concurrency is the
 * number of clients, spread over threads, each thread an epoll loop. A client picks a
 * key uniformly from the keyspace, GETs it (or SETs it, by --get-ratio), waits for the
 * answer and records the latency in a log-linear histogram (1 us resolution below
 * 1 ms, 64 sub-buckets per power of two above). For a Redis Cluster each client keeps one
 * connection per node and sends each key to the node owning its slot (CRC16 XMODEM,
 * the cluster's own hash), from the slot map given on the command line.
 *
 * --load writes every key once (pipelined, 64 deep per connection) and exits.
 * The result is one JSON line on stdout.
 *
 * Protocols: RESP (GET / SET) and memcached's meta protocol (mg <key> v / ms <key> <n>).
 * Built by the bench with the system's C compiler (cc -O2 -pthread).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_NODES 16
#define HIST_SIZE (1024 + 64 * 40)
#define BUF_SIZE (1 << 16)

enum proto { RESP, META };

static enum proto proto = RESP;
static int nnodes = 0;
static int ports[MAX_NODES];
static int slot_node[16384];
static int conns = 1, threads = 1, load_mode = 0;
static double duration_s = 5.0, get_ratio = 0.9;
static long keys = 1000, value_size = 100;
static const char *prefix = "rs:";
static char *value_buf;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint16_t crc16(const char *buf, int len) {
    uint16_t crc = 0;
    for (int i = 0; i < len; i++) {
        crc ^= (uint16_t)(unsigned char)buf[i] << 8;
        for (int j = 0; j < 8; j++) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static int hist_index(long us) {
    if (us < 1024) return us < 0 ? 0 : (int)us;
    int log2 = 63 - __builtin_clzl((unsigned long)us);
    int idx = 1024 + (log2 - 10) * 64 + (int)((us >> (log2 - 6)) & 63);
    return idx < HIST_SIZE ? idx : HIST_SIZE - 1;
}

static long hist_value(int idx) {
    if (idx < 1024) return idx;
    int log2 = (idx - 1024) / 64 + 10, sub = (idx - 1024) % 64;
    return ((long)(64 + sub)) << (log2 - 6);
}

struct conn {
    int fd;
    char in[BUF_SIZE];
    int in_len;
};

struct client {
    struct conn *node_conns[MAX_NODES];
    int waiting_node;  /* node whose reply we wait for, -1 if idle */
    int is_get;
    double sent_at;
    uint64_t rng;
    long next_key; /* load mode */
    long end_key;
    int outstanding; /* load mode */
};

struct worker {
    int id, nclients;
    struct client *clients;
    long hist[HIST_SIZE];
    long ops, gets, sets, hits, misses, errors;
};

static int connect_node(int node) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ports[node])};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        fprintf(stderr, "rsload: cannot connect to 127.0.0.1:%d: %s\n", ports[node], strerror(errno));
        exit(2);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}

static int key_name(char *out, long k) { return sprintf(out, "%s%ld", prefix, k); }

static int node_of(const char *key, int len) { return nnodes > 1 ? slot_node[crc16(key, len) & 16383] : 0; }

static void send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            fprintf(stderr, "rsload: write: %s\n", strerror(errno));
            exit(2);
        }
        buf += n; len -= (size_t)n;
    }
}

/* Build one request for key k into out; returns its length. */
static size_t build(char *out, long k, int is_get, int *node) {
    char key[64];
    int klen = key_name(key, k);
    *node = node_of(key, klen);
    if (proto == RESP) {
        if (is_get) return (size_t)sprintf(out, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", klen, key);
        size_t n = (size_t)sprintf(out, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%ld\r\n", klen, key, value_size);
        memcpy(out + n, value_buf, (size_t)value_size); n += (size_t)value_size;
        memcpy(out + n, "\r\n", 2);
        return n + 2;
    }
    if (is_get) return (size_t)sprintf(out, "mg %s v\r\n", key);
    size_t n = (size_t)sprintf(out, "ms %s %ld\r\n", key, value_size);
    memcpy(out + n, value_buf, (size_t)value_size); n += (size_t)value_size;
    memcpy(out + n, "\r\n", 2);
    return n + 2;
}

/* Length of one complete reply at buf (0: incomplete); *hit: 1 value, 0 miss, -1 error. */
static int reply_len(const char *buf, int len, int *hit) {
    const char *eol = memmem(buf, (size_t)len, "\r\n", 2);
    if (!eol) return 0;
    int line = (int)(eol - buf) + 2;
    if (proto == RESP) {
        if (buf[0] == '+') { *hit = 1; return line; }
        if (buf[0] == '-') { *hit = -1; return line; }
        if (buf[0] == '$') {
            long n = strtol(buf + 1, NULL, 10);
            if (n < 0) { *hit = 0; return line; }
            if (len < line + n + 2) return 0;
            *hit = 1;
            return line + (int)n + 2;
        }
        *hit = -1;
        return line;
    }
    if (buf[0] == 'V' && buf[1] == 'A') {
        long n = strtol(buf + 3, NULL, 10);
        if (len < line + n + 2) return 0;
        *hit = 1;
        return line + (int)n + 2;
    }
    if (buf[0] == 'E' && buf[1] == 'N') { *hit = 0; return line; }
    if (buf[0] == 'H' && buf[1] == 'D') { *hit = 1; return line; }
    *hit = -1;
    return line;
}

static char *out_buf_for(void) { return malloc((size_t)value_size * 64 + 64 * 128); }

static void start_request(struct worker *w, struct client *c, char *out) {
    long k = (long)(next_rand(&c->rng) % (uint64_t)keys);
    c->is_get = (double)(next_rand(&c->rng) % 1000000) / 1e6 < get_ratio;
    int node;
    size_t n = build(out, k, c->is_get, &node);
    c->waiting_node = node;
    c->sent_at = now_s();
    send_all(c->node_conns[node]->fd, out, n);
    (void)w;
}

static void *run_worker(void *arg) {
    struct worker *w = arg;
    int ep = epoll_create1(0);
    char *out = out_buf_for();
    for (int i = 0; i < w->nclients; i++) {
        struct client *c = &w->clients[i];
        c->rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(w->id * 1000003 + i + 1);
        for (int n = 0; n < nnodes; n++) {
            struct conn *cn = calloc(1, sizeof *cn);
            cn->fd = connect_node(n);
            c->node_conns[n] = cn;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            ev.data.u64 = ((uint64_t)i << 8) | (uint64_t)n;
            epoll_ctl(ep, EPOLL_CTL_ADD, cn->fd, &ev);
        }
    }
    double end = now_s() + duration_s;
    if (load_mode) {
        /* Each client writes its stripe of keys, 64 in flight per node connection. */
        for (int i = 0; i < w->nclients; i++) {
            struct client *c = &w->clients[i];
            for (int d = 0; d < 64 && c->next_key < c->end_key; d++, c->next_key++) {
                int node; size_t n = build(out, c->next_key, 0, &node);
                send_all(c->node_conns[node]->fd, out, n);
                c->outstanding++;
            }
        }
    } else {
        for (int i = 0; i < w->nclients; i++) start_request(w, &w->clients[i], out);
    }
    struct epoll_event events[256];
    int active = w->nclients;
    if (load_mode) /* a client with an empty stripe (more clients than keys) is done at once */
        for (int i = 0; i < w->nclients; i++) if (w->clients[i].outstanding == 0) active--;
    while (active > 0) {
        int ready = epoll_wait(ep, events, 256, 100);
        double t = now_s();
        if (!load_mode && t >= end) break;
        for (int e = 0; e < ready; e++) {
            int i = (int)(events[e].data.u64 >> 8), node = (int)(events[e].data.u64 & 0xff);
            struct client *c = &w->clients[i];
            struct conn *cn = c->node_conns[node];
            ssize_t got = read(cn->fd, cn->in + cn->in_len, (size_t)(BUF_SIZE - cn->in_len));
            if (got <= 0) {
                if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                fprintf(stderr, "rsload: connection to port %d closed\n", ports[node]);
                exit(2);
            }
            cn->in_len += (int)got;
            int off = 0, hit, len;
            while ((len = reply_len(cn->in + off, cn->in_len - off, &hit)) > 0) {
                off += len;
                if (hit < 0) w->errors++;
                if (load_mode) {
                    w->ops++; w->sets++;
                    c->outstanding--;
                    if (c->next_key < c->end_key) {
                        int nd; size_t n = build(out, c->next_key++, 0, &nd);
                        send_all(c->node_conns[nd]->fd, out, n);
                        c->outstanding++;
                    } else if (c->outstanding == 0) {
                        active--;
                    }
                    continue;
                }
                long us = (long)((t - c->sent_at) * 1e6);
                w->hist[hist_index(us)]++;
                w->ops++;
                if (c->is_get) { w->gets++; if (hit == 1) w->hits++; else if (hit == 0) w->misses++; }
                else w->sets++;
                start_request(w, c, out);
            }
            if (off > 0) { memmove(cn->in, cn->in + off, (size_t)(cn->in_len - off)); cn->in_len -= off; }
            if (cn->in_len == BUF_SIZE) {
                /* A reply larger than the buffer: only in load mode's pipelining, never for
                   values below 32 KB; refuse rather than misparse. */
                fprintf(stderr, "rsload: reply larger than %d bytes\n", BUF_SIZE);
                exit(2);
            }
        }
    }
    free(out);
    return NULL;
}

static void usage(void) {
    fprintf(stderr,
            "usage: rsload --proto resp|meta --ports P[,P...] [--slots A-B:I,...] [--conns N] [--threads T]\n"
            "              [--duration S] [--keys K] [--size V] [--get-ratio R] [--prefix P] [--load]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--load")) { load_mode = 1; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--proto")) proto = !strcmp(v, "meta") ? META : RESP;
        else if (!strcmp(a, "--ports")) {
            char *copy = strdup(v), *tok = strtok(copy, ",");
            while (tok && nnodes < MAX_NODES) { ports[nnodes++] = atoi(tok); tok = strtok(NULL, ","); }
        } else if (!strcmp(a, "--slots")) {
            char *copy = strdup(v), *tok = strtok(copy, ",");
            while (tok) {
                int lo, hi, idx;
                if (sscanf(tok, "%d-%d:%d", &lo, &hi, &idx) != 3 || lo < 0 || hi > 16383 || idx >= MAX_NODES) usage();
                for (int s = lo; s <= hi; s++) slot_node[s] = idx;
                tok = strtok(NULL, ",");
            }
        } else if (!strcmp(a, "--conns")) conns = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--duration")) duration_s = atof(v);
        else if (!strcmp(a, "--keys")) keys = atol(v);
        else if (!strcmp(a, "--size")) value_size = atol(v);
        else if (!strcmp(a, "--get-ratio")) get_ratio = atof(v);
        else if (!strcmp(a, "--prefix")) prefix = v;
        else usage();
    }
    if (nnodes == 0 || conns < 1 || threads < 1 || keys < 1 || value_size < 1 || value_size > 32000) usage();
    if (threads > conns) threads = conns;
    value_buf = malloc((size_t)value_size);
    memset(value_buf, 'x', (size_t)value_size);
    struct worker *workers = calloc((size_t)threads, sizeof *workers);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    long per_client = (keys + conns - 1) / conns, next = 0;
    for (int t = 0; t < threads; t++) {
        workers[t].id = t;
        workers[t].nclients = conns / threads + (t < conns % threads ? 1 : 0);
        workers[t].clients = calloc((size_t)workers[t].nclients, sizeof(struct client));
        for (int i = 0; i < workers[t].nclients; i++) {
            workers[t].clients[i].next_key = next;
            next = next + per_client < keys ? next + per_client : keys;
            workers[t].clients[i].end_key = next;
        }
    }
    double start = now_s();
    for (int t = 0; t < threads; t++) pthread_create(&tids[t], NULL, run_worker, &workers[t]);
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    double elapsed = now_s() - start;
    long hist[HIST_SIZE] = {0}, ops = 0, gets = 0, sets = 0, hits = 0, misses = 0, errors = 0;
    for (int t = 0; t < threads; t++) {
        for (int b = 0; b < HIST_SIZE; b++) hist[b] += workers[t].hist[b];
        ops += workers[t].ops; gets += workers[t].gets; sets += workers[t].sets;
        hits += workers[t].hits; misses += workers[t].misses; errors += workers[t].errors;
    }
    long total = 0;
    for (int b = 0; b < HIST_SIZE; b++) total += hist[b];
    double qs[3] = {0.5, 0.99, 0.999};
    long pv[3] = {0, 0, 0};
    for (int q = 0; q < 3; q++) {
        long need = (long)(qs[q] * (double)total + 0.5), run = 0;
        for (int b = 0; b < HIST_SIZE; b++) { run += hist[b]; if (run >= need && need > 0) { pv[q] = hist_value(b); break; } }
    }
    printf("{\"ops\": %ld, \"gets\": %ld, \"sets\": %ld, \"hits\": %ld, \"misses\": %ld, \"errors\": %ld, "
           "\"duration_s\": %.6f, \"p50_us\": %ld, \"p99_us\": %ld, \"p999_us\": %ld}\n",
           ops, gets, sets, hits, misses, errors, elapsed, pv[0], pv[1], pv[2]);
    return 0;
}
