/*
 * A minimal epoll echo server: the close-to-the-hardware baseline of
 * `evloop-bench compare`.
 *
 *     cc -O2 -o epoll_echo epoll_echo.c                        # batched
 *     cc -O2 -DONE_EVENT_PER_WAIT -o one_event epoll_echo.c    # the seed's loop
 *     ./epoll_echo PORT                                        # on 127.0.0.1
 *
 * Level-triggered, non-blocking, one 64 KiB read buffer shared by every
 * connection. Per readiness it reads once and writes what it read; bytes the
 * socket does not take are kept per connection, and until they are flushed the
 * connection waits for EPOLLOUT instead of EPOLLIN (backpressure: at most one
 * read's worth is ever pending). An idle connection costs one small struct.
 *
 * With -DONE_EVENT_PER_WAIT, epoll_wait returns one event per call, as the
 * seed's `kevent(kq, NULL, 0, event, 1, NULL)` does; everything else is equal.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef ONE_EVENT_PER_WAIT
#define MAX_EVENTS 1
#else
#define MAX_EVENTS 1024
#endif
#define BUFFER_SIZE (64 * 1024)

/* Output the socket did not take yet. Indexed by file descriptor. */
struct conn {
    char *pending;
    size_t pending_len;
    size_t pending_off;
};

static struct conn *conns;
static size_t conns_len;
static int epfd;
static char buffer[BUFFER_SIZE];

static void die(const char *what) {
    perror(what);
    exit(1);
}

static struct conn *conn_for(int fd) {
    if ((size_t)fd >= conns_len) {
        size_t len = conns_len ? conns_len : 1024;
        while (len <= (size_t)fd)
            len *= 2;
        conns = realloc(conns, len * sizeof *conns);
        if (!conns)
            die("realloc");
        memset(conns + conns_len, 0, (len - conns_len) * sizeof *conns);
        conns_len = len;
    }
    return &conns[fd];
}

static void close_conn(int fd) {
    struct conn *c = conn_for(fd);
    free(c->pending);
    memset(c, 0, sizeof *c);
    close(fd); /* also removes it from the epoll set */
}

static void watch(int fd, int op, unsigned events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(epfd, op, fd, &ev) < 0)
        die("epoll_ctl");
}

/* Writes buf; keeps what the socket refuses. Returns -1 if the connection failed. */
static int send_or_keep(int fd, const char *buf, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            struct conn *c = conn_for(fd);
            c->pending = malloc(len - off);
            if (!c->pending)
                die("malloc");
            memcpy(c->pending, buf + off, len - off);
            c->pending_len = len - off;
            c->pending_off = 0;
            watch(fd, EPOLL_CTL_MOD, EPOLLOUT);
            return 0;
        } else {
            return -1;
        }
    }
    return 0;
}

static void on_readable(int fd) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n > 0) {
        if (send_or_keep(fd, buffer, (size_t)n) < 0)
            close_conn(fd);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        close_conn(fd);
    }
}

static void on_writable(int fd) {
    struct conn *c = conn_for(fd);
    while (c->pending_off < c->pending_len) {
        ssize_t n = write(fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
        if (n > 0) {
            c->pending_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else {
            close_conn(fd);
            return;
        }
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    watch(fd, EPOLL_CTL_MOD, EPOLLIN);
}

static void accept_all(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            if (errno == ECONNABORTED)
                continue;
            /* EMFILE and the like: the listener stays readable, so this
             * repeats until a descriptor frees; the harness stays below the
             * descriptor limit, and a baseline needs no back-off. */
            perror("accept4");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_for(fd);
        watch(fd, EPOLL_CTL_ADD, EPOLLIN);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0)
        die("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (listen(listener, SOMAXCONN) < 0)
        die("listen");
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    watch(listener, EPOLL_CTL_ADD, EPOLLIN);
    fprintf(stderr, "listening on 127.0.0.1:%s (%d events per wait)\n", argv[1], MAX_EVENTS);

    static struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener)
                accept_all(listener);
            else if (conn_for(fd)->pending)
                on_writable(fd); /* EPOLLOUT, or EPOLLHUP/EPOLLERR that write reports */
            else
                on_readable(fd); /* EPOLLIN, or EPOLLHUP/EPOLLERR that read reports */
        }
    }
}
