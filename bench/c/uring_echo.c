/*
 * A single-threaded io_uring echo server: the second C baseline of
 * `evloop-bench compare`, written for speed the way liburing's authors
 * recommend for networking.
 *
 *     cc -O2 -o uring_echo uring_echo.c -luring
 *     ./uring_echo PORT                                       # on 127.0.0.1
 *
 * - One multishot accept on the listener: one SQE yields every connection.
 * - One multishot receive per connection, into a provided buffer ring: the
 *   kernel picks a buffer when data arrives, so an idle connection pins no
 *   buffer, and one SQE yields every chunk until EOF or an error.
 * - The received bytes are copied into the connection's own output buffer and
 *   the provided buffer is recycled at once, so the ring never runs dry while
 *   a send waits for a slow reader. One send per connection is in flight at a
 *   time (that keeps the bytes in order); what arrives meanwhile is appended
 *   and sent when the send completes. Short sends continue with the rest.
 * - The ring asks for SINGLE_ISSUER | DEFER_TASKRUN (completions are
 *   processed only when this thread waits, in one batch), else COOP_TASKRUN,
 *   else nothing; one io_uring_submit_and_wait per batch of completions.
 *
 * Buffers: 1024 × 4 KiB (4 MiB, touched only as used). 4 KiB is the largest
 * message of the comparison, so every message fits one buffer and one send;
 * 1024 is twice the most connections the throughput runs use, so the ring
 * runs dry only when most connections receive in the same batch.
 *
 * A connection whose peer does not read stops being received from once
 * 1 MiB of output is queued (its receive is cancelled) and resumes when the
 * output is flushed, so memory stays bounded. It prints its setup once to
 * stderr and nothing per request. If the kernel refuses io_uring (EPERM,
 * ENOSYS), it says so and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define RING_ENTRIES 4096 /* SQ size; the CQ gets twice as many */
#define BUF_COUNT 1024    /* provided buffers: a power of two */
#define BUF_SIZE 4096
#define BUF_GROUP 0
#define HIGH_WATER (1 << 20) /* queued output that pauses receiving */

/* What a completion is for: the low two bits of user_data (a struct conn is
 * malloc-aligned, so they are free); the rest is the connection. */
enum op { OP_IGNORE = 0, OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3 };

struct out {
    char *data;
    size_t len, off, cap;
};

/* Freed only when no request refers to it any more. */
struct conn {
    int fd;
    bool recv_armed; /* a multishot receive is in flight */
    bool sending;    /* a send of `out` is in flight */
    bool paused;     /* receive cancelled until the output drains */
    bool eof;        /* the peer closed: flush, then close */
    bool broken;     /* an error: drop the output, close */
    struct out out;     /* being sent: data[off..len] */
    struct out pending; /* arrived while a send was in flight */
};

static struct io_uring ring;
static struct io_uring_buf_ring *buf_ring;
static char *buffers;
static int recycled; /* buffers re-added in this batch, made visible after it */

static void die(const char *what, int err) {
    fprintf(stderr, "%s: %s\n", what, strerror(err));
    exit(1);
}

static struct io_uring_sqe *get_sqe(void) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    while (!sqe) { /* the SQ is full: hand it to the kernel and go on */
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

static void tag(struct io_uring_sqe *sqe, struct conn *c, enum op op) {
    io_uring_sqe_set_data64(sqe, (__u64)(uintptr_t)c | op);
}

static void recycle(unsigned short bid) {
    io_uring_buf_ring_add(buf_ring, buffers + (size_t)bid * BUF_SIZE, BUF_SIZE, bid,
                          io_uring_buf_ring_mask(BUF_COUNT), recycled++);
}

/* liburing 2.3 (Debian 12) has no io_uring_setup_buf_ring; this is what it
 * does: page-aligned ring memory, registered as buffer group BUF_GROUP. */
static void setup_buffers(void) {
    size_t ring_size = BUF_COUNT * sizeof(struct io_uring_buf);
    buf_ring = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    buffers = malloc((size_t)BUF_COUNT * BUF_SIZE);
    if (buf_ring == MAP_FAILED || !buffers)
        die("buffers", ENOMEM);
    struct io_uring_buf_reg reg = {
        .ring_addr = (__u64)(uintptr_t)buf_ring, .ring_entries = BUF_COUNT, .bgid = BUF_GROUP};
    int ret = io_uring_register_buf_ring(&ring, &reg, 0);
    if (ret < 0)
        die("io_uring_register_buf_ring", -ret);
    io_uring_buf_ring_init(buf_ring);
    for (int bid = 0; bid < BUF_COUNT; bid++)
        recycle((unsigned short)bid);
    io_uring_buf_ring_advance(buf_ring, recycled);
    recycled = 0;
}

/* The fastest setup this kernel accepts; returns its name. */
static const char *setup_ring(void) {
    static const struct {
        unsigned flags;
        const char *name;
    } tries[] = {
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, "SINGLE_ISSUER|DEFER_TASKRUN"},
        {IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"},
        {0, "none"},
    };
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        struct io_uring_params params = {.flags = tries[i].flags};
        int ret = io_uring_queue_init_params(RING_ENTRIES, &ring, &params);
        if (ret == 0)
            return tries[i].name;
        if (ret == -EPERM || ret == -ENOSYS) {
            fprintf(stderr, "io_uring is unavailable here: io_uring_queue_init: %s\n",
                    strerror(-ret));
            exit(1);
        }
        if (ret != -EINVAL) /* EINVAL: flags this kernel lacks; try fewer */
            die("io_uring_queue_init", -ret);
    }
    die("io_uring_queue_init", EINVAL);
    return NULL;
}

static void arm_accept(int listener) {
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_multishot_accept(sqe, listener, NULL, NULL, SOCK_CLOEXEC);
    tag(sqe, NULL, OP_ACCEPT);
}

static void arm_recv(struct conn *c) {
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT; /* the kernel picks from the buffer ring */
    sqe->buf_group = BUF_GROUP;
    tag(sqe, c, OP_RECV);
    c->recv_armed = true;
}

static void append(struct out *o, const char *data, size_t len) {
    if (o->len + len > o->cap) {
        size_t cap = o->cap ? o->cap : BUF_SIZE;
        while (cap < o->len + len)
            cap *= 2;
        o->data = realloc(o->data, cap);
        if (!o->data)
            die("realloc", ENOMEM);
        o->cap = cap;
    }
    memcpy(o->data + o->len, data, len);
    o->len += len;
}

/* With no send in flight: send the rest of `out`, else what is pending;
 * resumes receiving once everything is sent. */
static void flush(struct conn *c) {
    if (c->out.off == c->out.len) {
        struct out drained = c->out; /* swap, keeping both allocations */
        c->out = c->pending;
        c->pending = drained;
        c->pending.len = c->pending.off = 0;
    }
    if (c->out.off < c->out.len) {
        struct io_uring_sqe *sqe = get_sqe();
        io_uring_prep_send(sqe, c->fd, c->out.data + c->out.off, c->out.len - c->out.off,
                           MSG_NOSIGNAL);
        tag(sqe, c, OP_SEND);
        c->sending = true;
    } else if (c->paused) {
        c->paused = false;
        if (!c->recv_armed && !c->eof)
            arm_recv(c);
    }
}

/* Closes and frees the connection once no request refers to it and there is
 * nothing more to do. */
static void maybe_free(struct conn *c) {
    bool input_over = c->eof || c->broken;
    bool output_done = c->broken || c->pending.len == 0;
    if (c->recv_armed || c->sending || !input_over || !output_done)
        return;
    close(c->fd);
    free(c->out.data);
    free(c->pending.data);
    free(c);
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe) {
    int res = cqe->res;
    if (res > 0) {
        unsigned short bid = (unsigned short)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (!c->broken)
            append(&c->pending, buffers + (size_t)bid * BUF_SIZE, (size_t)res);
        recycle(bid); /* copied: the kernel may fill it again */
        if (!c->sending && !c->broken)
            flush(c);
        size_t queued = c->pending.len + (c->out.len - c->out.off);
        if (queued > HIGH_WATER && !c->paused) {
            c->paused = true; /* flush() resumes receiving */
            if (cqe->flags & IORING_CQE_F_MORE) { /* end it with -ECANCELED */
                struct io_uring_sqe *sqe = get_sqe();
                io_uring_prep_cancel64(sqe, (__u64)(uintptr_t)c | OP_RECV, 0);
                tag(sqe, NULL, OP_IGNORE);
            }
        }
    }
    if (cqe->flags & IORING_CQE_F_MORE)
        return; /* still armed */
    c->recv_armed = false;
    if (res == 0)
        c->eof = true;
    else if (res < 0 && res != -ENOBUFS && res != -ECANCELED)
        c->broken = true;
    /* Data, ENOBUFS (the ring ran dry; recycled buffers come back at the end
     * of this batch) or a cancel that the drained output already undid. */
    else if (!c->paused && !c->eof && !c->broken)
        arm_recv(c);
    maybe_free(c);
}

static void on_send(struct conn *c, int res) {
    c->sending = false;
    if (res < 0) {
        c->broken = true;
        if (c->recv_armed) /* ends the multishot receive with EOF */
            shutdown(c->fd, SHUT_RDWR);
    } else {
        c->out.off += (size_t)res;
        if (!c->broken)
            flush(c); /* the rest of a short send, or what arrived meanwhile */
    }
    maybe_free(c);
}

static void on_accept(int listener, struct io_uring_cqe *cqe) {
    if (cqe->res >= 0) {
        int one = 1;
        setsockopt(cqe->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c)
            die("calloc", ENOMEM);
        c->fd = cqe->res;
        arm_recv(c);
    } else if (cqe->res != -ECONNABORTED) {
        /* EMFILE and the like: the harness stays below the descriptor limit,
         * and a baseline needs no back-off. */
        fprintf(stderr, "accept: %s\n", strerror(-cqe->res));
    }
    if (!(cqe->flags & IORING_CQE_F_MORE))
        arm_accept(listener);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0)
        die("socket", errno);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind", errno);
    /* The ring comes before listen: a refused io_uring exits before anyone
     * can connect. */
    const char *setup = setup_ring();
    setup_buffers();
    /* Said before listening, so whoever sees the port listen finds it logged. */
    fprintf(stderr, "io_uring setup: %s; %d × %d B provided buffers; listening on 127.0.0.1:%s\n",
            setup, BUF_COUNT, BUF_SIZE, argv[1]);
    if (listen(listener, SOMAXCONN) < 0)
        die("listen", errno);
    arm_accept(listener);

    for (;;) {
        int ret = io_uring_submit_and_wait(&ring, 1);
        if (ret < 0 && ret != -EINTR)
            die("io_uring_submit_and_wait", -ret);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            __u64 data = io_uring_cqe_get_data64(cqe);
            struct conn *c = (struct conn *)(uintptr_t)(data & ~(__u64)3);
            switch ((enum op)(data & 3)) {
            case OP_ACCEPT: on_accept(listener, cqe); break;
            case OP_RECV: on_recv(c, cqe); break;
            case OP_SEND: on_send(c, cqe->res); break;
            case OP_IGNORE: break;
            }
            seen++;
        }
        io_uring_cq_advance(&ring, seen);
        /* Every buffer recycled in this batch, visible to the kernel at once. */
        io_uring_buf_ring_advance(buf_ring, recycled);
        recycled = 0;
    }
}
