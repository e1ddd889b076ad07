/*
 * floor: the leanest forward proxy the load harness knows how to write, as
 * a reference for what this machine allows. No filtering, no logging, no
 * timeouts, no names: HTTP CONNECT and SOCKS5 (no authentication, CONNECT
 * command, IPv4 literal) on one port, told apart by the first byte; plain
 * absolute-URI GETs on keep-alive connections (one origin per client
 * connection, no request bodies); or, with -f, plain TCP port forwarding
 * with no handshake at all. One thread per CPU, each with its own
 * SO_REUSEPORT listener and its own edge-triggered epoll; the bytes move
 * with read/write through one buffer per thread (-m rw), with splice
 * through a pipe per direction (-m splice), or with read/write until a
 * read fills the buffer and splice from then on (-m auto, for each
 * direction of each tunnel). A pipe goes back to its thread's pool
 * whenever it is empty and its source has nothing to read, so an idle
 * tunnel holds its two sockets only. It is a measuring instrument,
 * not a proxy to deploy: it trusts its clients and reaches whatever they
 * name.
 *
 *   cc -O2 -pthread -o floor floor.c
 *   floor -l 127.0.0.1:PORT [options]                    CONNECT + SOCKS5 + GET
 *   floor -f 127.0.0.1:LPORT=127.0.0.1:TPORT ... [options] port forwarding
 *
 * Options: -t threads (default: CPUs), -m rw|splice|auto (default rw), -r
 * read buffer bytes (rw and auto, default 65536), -p pipe bytes (splice, F_SETPIPE_SZ;
 * default the kernel's 65536), -b socket buffer bytes (SO_SNDBUF and
 * SO_RCVBUF on both sides; default: the kernel's autotuning), -d seconds
 * of TCP_DEFER_ACCEPT (default 1; 0 off), -N no TCP_NODELAY.
 * It prints "listening on ADDR" for each listener once all are bound.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { K_LISTEN, K_END };
enum { S_HEAD, S_SOCKS_REQ, S_CONNECTING, S_RELAY };
enum { P_FORWARD, P_CONNECT, P_SOCKS, P_GET };

#define HEADMAX 1024
#define MAXFWD 16

static int opt_threads, opt_splice, opt_rbuf = 65536, opt_pipe, opt_sockbuf, opt_defer = 1, opt_nodelay = 1;
static int nlisten;
static struct sockaddr_in laddr[MAXFWD], taddr[MAXFWD];

struct tun;

/* end is one socket of a tunnel: 0 the client, 1 the origin. */
struct end {
	unsigned char kind; /* K_END */
	unsigned char side;
	unsigned char rdhup; /* the peer's FIN was seen: read to EOF */
	unsigned char eof;   /* read returned 0 */
	int fd;
	struct tun *t;
};

/* dir is the bytes moving from end s to end 1-s. */
struct dir {
	char *pend; /* rw: bytes read but not yet written */
	int off, len;
	int pipe[2]; /* splice: -1 until the first byte */
	int inpipe;
	unsigned char shut; /* EOF passed on (shutdown SHUT_WR) */
	unsigned char spl;  /* -m auto: this direction splices from now on */
};

struct tun {
	struct end e[2];
	struct dir d[2];
	unsigned char state, proto, dead, cready;
	int hlen;           /* bytes in head */
	char head[HEADMAX]; /* the handshake; for P_GET, the client's request heads */
	struct sockaddr_in dst;
	struct tun *nextdead;
};

struct listener {
	unsigned char kind; /* K_LISTEN */
	int fd, fwd;        /* fwd: index into taddr, or -1 */
};

struct worker {
	int ep;
	char *buf;
	struct tun *dead;
	int npipes;
	int pipes[256][2]; /* empty pipes kept for the next tunnel */
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void sockopts(int fd)
{
	int one = 1;
	if (opt_nodelay)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (opt_sockbuf) {
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &opt_sockbuf, sizeof opt_sockbuf);
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opt_sockbuf, sizeof opt_sockbuf);
	}
}

static void watch(struct worker *w, struct end *e)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = e};
	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, e->fd, &ev) < 0)
		die("epoll_ctl");
}

/* kill closes both sockets; the tunnel is freed after the current batch
 * of events, which may still name it. */
static void kill_tun(struct worker *w, struct tun *t)
{
	if (t->dead)
		return;
	t->dead = 1;
	for (int s = 0; s < 2; s++) {
		if (t->e[s].fd >= 0)
			close(t->e[s].fd);
		struct dir *d = &t->d[s];
		free(d->pend);
		if (d->pipe[0] >= 0) {
			if (d->inpipe == 0 && w->npipes < 256) {
				w->pipes[w->npipes][0] = d->pipe[0];
				w->pipes[w->npipes++][1] = d->pipe[1];
			} else {
				close(d->pipe[0]);
				close(d->pipe[1]);
			}
		}
	}
	t->nextdead = w->dead;
	w->dead = t;
}

static struct tun *new_tun(int cfd)
{
	struct tun *t = calloc(1, sizeof *t);
	if (!t)
		die("calloc");
	for (int s = 0; s < 2; s++) {
		t->e[s].kind = K_END;
		t->e[s].side = s;
		t->e[s].t = t;
		t->d[s].pipe[0] = t->d[s].pipe[1] = -1;
	}
	t->e[0].fd = cfd;
	t->e[1].fd = -1;
	return t;
}

static int stash(struct dir *d, const char *p, int n)
{
	char *b = malloc(n);
	if (!b)
		return -1;
	memcpy(b, p, n);
	free(d->pend);
	d->pend = b;
	d->off = 0;
	d->len = n;
	return 0;
}

static int rewrite_get(struct worker *w, struct tun *t);

/* passeof passes on EOF from end s; it closes the tunnel when both
 * directions have ended. */
static void passeof(struct worker *w, struct tun *t, int s)
{
	struct dir *d = &t->d[s];
	if (d->shut)
		return;
	shutdown(t->e[1 - s].fd, SHUT_WR);
	d->shut = 1;
	if (t->d[1 - s].shut)
		kill_tun(w, t);
}

/* pump moves what end s has for end 1-s until one of them would block. */
static void pump(struct worker *w, struct tun *t, int s)
{
	struct end *src = &t->e[s];
	int dst = t->e[1 - s].fd;
	struct dir *d = &t->d[s];
	if (d->shut || t->dead)
		return;
	if (t->proto == P_GET && s == 0) {
		if (rewrite_get(w, t) < 0)
			kill_tun(w, t);
		return;
	}
	if (opt_splice == 1 || d->spl) {
		for (;;) {
			if (d->inpipe) {
				ssize_t n = splice(d->pipe[0], NULL, dst, NULL, d->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
				if (n < 0) {
					if (errno != EAGAIN)
						kill_tun(w, t);
					return;
				}
				d->inpipe -= n;
				continue;
			}
			if (src->eof) {
				passeof(w, t, s);
				return;
			}
			if (d->pipe[0] < 0) {
				if (w->npipes > 0) {
					w->npipes--;
					d->pipe[0] = w->pipes[w->npipes][0];
					d->pipe[1] = w->pipes[w->npipes][1];
				} else {
					if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
						kill_tun(w, t);
						return;
					}
					if (opt_pipe)
						fcntl(d->pipe[1], F_SETPIPE_SZ, opt_pipe);
				}
			}
			ssize_t n = splice(src->fd, NULL, d->pipe[1], NULL, 1 << 20, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0)
				d->inpipe += n;
			else if (n == 0)
				src->eof = 1;
			else {
				if (errno != EAGAIN)
					kill_tun(w, t);
				else if (w->npipes < 256) {
					/* Empty and waiting: an idle tunnel
					 * holds no pipe. */
					w->pipes[w->npipes][0] = d->pipe[0];
					w->pipes[w->npipes++][1] = d->pipe[1];
					d->pipe[0] = d->pipe[1] = -1;
				}
				return;
			}
		}
	}
	for (;;) {
		if (d->len) {
			ssize_t n = write(dst, d->pend + d->off, d->len);
			if (n < 0) {
				if (errno != EAGAIN)
					kill_tun(w, t);
				return;
			}
			d->off += n;
			d->len -= n;
			if (d->len)
				return;
			free(d->pend);
			d->pend = NULL;
		}
		if (src->eof) {
			passeof(w, t, s);
			return;
		}
		ssize_t n = read(src->fd, w->buf, opt_rbuf);
		if (n == 0) {
			src->eof = 1;
			continue;
		}
		if (n < 0) {
			if (errno != EAGAIN)
				kill_tun(w, t);
			return;
		}
		ssize_t m = write(dst, w->buf, n);
		if (m < 0) {
			if (errno != EAGAIN) {
				kill_tun(w, t);
				return;
			}
			m = 0;
		}
		if (m < n) {
			if (stash(d, w->buf + m, n - m) < 0)
				kill_tun(w, t);
			return;
		}
		/* A short read emptied the socket: a later byte or FIN raises
		 * a new edge. After a FIN, read on to EOF. */
		if (n < opt_rbuf && !src->rdhup)
			return;
		if (opt_splice == 2 && n == opt_rbuf) { /* a bulk transfer */
			d->spl = 1;
			pump(w, t, s);
			return;
		}
	}
}

static const char http200[] = "HTTP/1.1 200 Connection established\r\n\r\n";
static const char http400[] = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";
static const char http502[] = "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n";
static const unsigned char socks_ok[10] = {5, 0, 0, 1, 0, 0, 0, 0, 0, 0};
static const unsigned char socks_fail[10] = {5, 5, 0, 1, 0, 0, 0, 0, 0, 0};
static const unsigned char socks_cmd[10] = {5, 7, 0, 1, 0, 0, 0, 0, 0, 0};
static const unsigned char socks_atyp[10] = {5, 8, 0, 1, 0, 0, 0, 0, 0, 0};

static void refuse(struct worker *w, struct tun *t, const void *msg, size_t n)
{
	if (write(t->e[0].fd, msg, n) < 0) {
		/* the client is gone: nothing to say */
	}
	kill_tun(w, t);
}

static void relay(struct worker *w, struct tun *t)
{
	t->state = S_RELAY;
	if (t->d[0].len || t->cready || t->e[0].rdhup || t->proto == P_GET)
		pump(w, t, 0);
	pump(w, t, 1);
}

/* connected answers the client once the origin accepted, and relays. */
static void connected(struct worker *w, struct tun *t)
{
	const void *msg = NULL;
	size_t n = 0;
	switch (t->proto) {
	case P_CONNECT:
		msg = http200, n = sizeof http200 - 1;
		break;
	case P_SOCKS:
		msg = socks_ok, n = sizeof socks_ok;
		break;
	}
	if (n && write(t->e[0].fd, msg, n) != (ssize_t)n) {
		kill_tun(w, t);
		return;
	}
	relay(w, t);
}

static void dial(struct worker *w, struct tun *t)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		kill_tun(w, t);
		return;
	}
	sockopts(fd);
	t->e[1].fd = fd;
	int r = connect(fd, (struct sockaddr *)&t->dst, sizeof t->dst);
	if (r < 0 && errno != EINPROGRESS) {
		if (t->proto == P_SOCKS)
			refuse(w, t, socks_fail, sizeof socks_fail);
		else if (t->proto == P_FORWARD)
			kill_tun(w, t);
		else
			refuse(w, t, http502, sizeof http502 - 1);
		return;
	}
	watch(w, &t->e[1]);
	if (r == 0) { /* loopback connects at once, mostly */
		connected(w, t);
		return;
	}
	t->state = S_CONNECTING; /* until the first writable edge */
}

/* hostport parses "A.B.C.D:PORT" of n bytes into sa. */
static int hostport(const char *p, int n, struct sockaddr_in *sa)
{
	char b[32];
	const char *colon = memrchr(p, ':', n);
	if (!colon || colon - p >= (int)sizeof b || n - (colon - p) > 6)
		return -1;
	memcpy(b, p, colon - p);
	b[colon - p] = 0;
	memset(sa, 0, sizeof *sa);
	sa->sin_family = AF_INET;
	if (inet_pton(AF_INET, b, &sa->sin_addr) != 1)
		return -1;
	int port = 0;
	for (const char *q = colon + 1; q < p + n; q++) {
		if (*q < '0' || *q > '9')
			return -1;
		port = port * 10 + *q - '0';
	}
	if (port < 1 || port > 65535)
		return -1;
	sa->sin_port = htons(port);
	return 0;
}

/* gethead rewrites the first request head in t->head, "GET
 * http://A.B.C.D:PORT/path HTTP/1.1", to origin form in w->buf; it
 * returns the length of the rewritten head, 0 when the head is not
 * complete, -1 when it is not a bodyless request to an IPv4 literal (or,
 * with want set, to another origin than want). *used is the bytes of
 * t->head it took. */
static int gethead(struct worker *w, struct tun *t, struct sockaddr_in *want, int *used)
{
	char *end = memmem(t->head, t->hlen, "\r\n\r\n", 4);
	if (!end)
		return t->hlen == HEADMAX ? -1 : 0;
	int hl = end + 4 - t->head;
	char *sp = memchr(t->head, ' ', hl);
	if (!sp || ((sp - t->head != 3 || memcmp(t->head, "GET", 3)) && (sp - t->head != 4 || memcmp(t->head, "HEAD", 4))))
		return -1;
	char *uri = sp + 1;
	if (end - uri < 7 || memcmp(uri, "http://", 7))
		return -1;
	char *host = uri + 7;
	char *path = host;
	while (path < end && *path != '/' && *path != ' ')
		path++;
	struct sockaddr_in sa;
	if (hostport(host, path - host, &sa) < 0)
		return -1;
	if (want) {
		if (want->sin_addr.s_addr != sa.sin_addr.s_addr || want->sin_port != sa.sin_port)
			return -1;
	} else
		t->dst = sa;
	int n = 0;
	memcpy(w->buf, t->head, uri - t->head);
	n = uri - t->head;
	if (*path != '/')
		w->buf[n++] = '/';
	memcpy(w->buf + n, path, end + 4 - path);
	n += end + 4 - path;
	*used = hl;
	return n;
}

/* rewrite_get moves the client's requests of a P_GET tunnel to the
 * origin, each head rewritten to origin form. */
static int rewrite_get(struct worker *w, struct tun *t)
{
	struct dir *d = &t->d[0];
	int drained = 0;
	for (;;) {
		if (d->len) {
			ssize_t n = write(t->e[1].fd, d->pend + d->off, d->len);
			if (n < 0)
				return errno == EAGAIN ? 0 : -1;
			d->off += n;
			d->len -= n;
			if (d->len)
				return 0;
			free(d->pend);
			d->pend = NULL;
		}
		int used, n = t->hlen ? gethead(w, t, &t->dst, &used) : 0;
		if (n < 0)
			return -1;
		if (n > 0) {
			memmove(t->head, t->head + used, t->hlen - used);
			t->hlen -= used;
			ssize_t m = write(t->e[1].fd, w->buf, n);
			if (m < 0 && errno != EAGAIN)
				return -1;
			if (m < 0)
				m = 0;
			if (m < n && stash(d, w->buf + m, n - m) < 0)
				return -1;
			continue;
		}
		if (t->e[0].eof) {
			passeof(w, t, 0);
			return 0;
		}
		if (drained)
			return 0;
		ssize_t r = read(t->e[0].fd, t->head + t->hlen, HEADMAX - t->hlen);
		if (r == 0)
			t->e[0].eof = 1;
		else if (r < 0)
			return errno == EAGAIN ? 0 : -1;
		else {
			/* a short read emptied the socket (see pump) */
			drained = r < HEADMAX - t->hlen && !t->e[0].rdhup;
			t->hlen += r;
		}
	}
}

/* handshake reads the client's request and, once it is whole, dials. */
static void handshake(struct worker *w, struct tun *t)
{
	for (;;) {
		ssize_t n = read(t->e[0].fd, t->head + t->hlen, HEADMAX - t->hlen);
		if (n == 0 || (n < 0 && errno != EAGAIN)) {
			kill_tun(w, t);
			return;
		}
		if (n < 0)
			return;
		t->hlen += n;
		unsigned char *h = (unsigned char *)t->head;
		if (t->state == S_SOCKS_REQ || h[0] == 5) {
			int at = 0;
			if (t->state == S_HEAD) {
				if (t->hlen < 2 || t->hlen < 2 + h[1])
					continue;
				at = 2 + h[1];
				if (write(t->e[0].fd, "\x05\x00", 2) != 2) {
					kill_tun(w, t);
					return;
				}
				t->state = S_SOCKS_REQ;
				memmove(t->head, t->head + at, t->hlen - at);
				t->hlen -= at;
			}
			if (t->hlen < 5)
				continue;
			if (h[1] != 1) {
				refuse(w, t, socks_cmd, sizeof socks_cmd);
				return;
			}
			int need;
			memset(&t->dst, 0, sizeof t->dst);
			t->dst.sin_family = AF_INET;
			if (h[3] == 1) {
				need = 10;
				if (t->hlen < need)
					continue;
				memcpy(&t->dst.sin_addr, h + 4, 4);
			} else if (h[3] == 3) {
				need = 5 + h[4] + 2;
				if (t->hlen < need)
					continue;
				char b[256];
				memcpy(b, h + 5, h[4]);
				b[h[4]] = 0;
				if (inet_pton(AF_INET, b, &t->dst.sin_addr) != 1) {
					refuse(w, t, socks_atyp, sizeof socks_atyp);
					return;
				}
			} else {
				refuse(w, t, socks_atyp, sizeof socks_atyp);
				return;
			}
			memcpy(&t->dst.sin_port, h + need - 2, 2);
			if (t->hlen > need && stash(&t->d[0], t->head + need, t->hlen - need) < 0) {
				kill_tun(w, t);
				return;
			}
			t->proto = P_SOCKS;
			dial(w, t);
			return;
		}
		char *end = memmem(t->head, t->hlen, "\r\n\r\n", 4);
		if (!end) {
			if (t->hlen == HEADMAX) {
				refuse(w, t, http400, sizeof http400 - 1);
				return;
			}
			continue;
		}
		int hl = end + 4 - t->head;
		if (hl > 8 && !memcmp(t->head, "CONNECT ", 8)) {
			char *p = t->head + 8, *q = memchr(p, ' ', end - p);
			if (!q || hostport(p, q - p, &t->dst) < 0) {
				refuse(w, t, http400, sizeof http400 - 1);
				return;
			}
			if (t->hlen > hl && stash(&t->d[0], t->head + hl, t->hlen - hl) < 0) {
				kill_tun(w, t);
				return;
			}
			t->proto = P_CONNECT;
			dial(w, t);
			return;
		}
		/* An absolute-URI GET: the head stays in t->head; the first
		 * pump after the connection rewrites it. */
		int used;
		if (gethead(w, t, NULL, &used) <= 0) {
			refuse(w, t, http400, sizeof http400 - 1);
			return;
		}
		t->proto = P_GET;
		dial(w, t);
		return;
	}
}

static void event(struct worker *w, struct end *e, uint32_t ev)
{
	struct tun *t = e->t;
	int s = e->side;
	if (t->dead)
		return;
	if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		e->rdhup = 1;
	switch (t->state) {
	case S_HEAD:
	case S_SOCKS_REQ:
		if (s == 0 && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
			handshake(w, t);
		return;
	case S_CONNECTING:
		if (s == 0) {
			t->cready = 1;
			return;
		}
		if (ev & (EPOLLERR | EPOLLHUP)) {
			if (t->proto == P_SOCKS)
				refuse(w, t, socks_fail, sizeof socks_fail);
			else if (t->proto == P_FORWARD)
				kill_tun(w, t);
			else
				refuse(w, t, http502, sizeof http502 - 1);
			return;
		}
		connected(w, t);
		return;
	}
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		pump(w, t, s);
	if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
		struct dir *d = &t->d[1 - s];
		if (d->len || d->inpipe)
			pump(w, t, 1 - s);
	}
}

static void accept_all(struct worker *w, struct listener *l)
{
	for (;;) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE)
				return; /* the next connection retries */
			die("accept");
		}
		sockopts(fd);
		struct tun *t = new_tun(fd);
		watch(w, &t->e[0]);
		if (l->fwd >= 0) {
			t->proto = P_FORWARD;
			t->dst = taddr[l->fwd];
			dial(w, t);
		}
		/* Else the registration above reports the request if it is
		 * already here (TCP_DEFER_ACCEPT), as any edge after it. */
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[512];
	for (;;) {
		int n = epoll_wait(w->ep, evs, 512, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			unsigned char kind = *(unsigned char *)evs[i].data.ptr;
			if (kind == K_LISTEN)
				accept_all(w, evs[i].data.ptr);
			else
				event(w, evs[i].data.ptr, evs[i].events);
		}
		while (w->dead) {
			struct tun *t = w->dead;
			w->dead = t->nextdead;
			free(t);
		}
	}
	return NULL;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	return hostport(s, strlen(s), sa);
}

static void usage(void)
{
	fprintf(stderr, "usage: floor (-l 127.0.0.1:PORT | -f 127.0.0.1:LPORT=127.0.0.1:TPORT ...) [-t threads] [-m rw|splice|auto] [-r bytes] [-p pipe bytes] [-b socket buffer bytes] [-d defer seconds] [-N]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int c, fwd = 0;
	while ((c = getopt(argc, argv, "l:f:t:m:r:p:b:d:N")) != -1) {
		switch (c) {
		case 'l':
		case 'f':
			if (nlisten == MAXFWD)
				usage();
			if (c == 'f') {
				char *eq = strchr(optarg, '=');
				if (!eq)
					usage();
				*eq = 0;
				if (parse_addr(eq + 1, &taddr[nlisten]) < 0)
					usage();
				fwd = 1;
			}
			if (parse_addr(optarg, &laddr[nlisten]) < 0)
				usage();
			nlisten++;
			break;
		case 't':
			opt_threads = atoi(optarg);
			break;
		case 'm':
			if (!strcmp(optarg, "splice"))
				opt_splice = 1;
			else if (!strcmp(optarg, "auto"))
				opt_splice = 2;
			else if (strcmp(optarg, "rw"))
				usage();
			break;
		case 'r':
			opt_rbuf = atoi(optarg);
			break;
		case 'p':
			opt_pipe = atoi(optarg);
			break;
		case 'b':
			opt_sockbuf = atoi(optarg);
			break;
		case 'd':
			opt_defer = atoi(optarg);
			break;
		case 'N':
			opt_nodelay = 0;
			break;
		default:
			usage();
		}
	}
	if (nlisten == 0 || optind != argc || opt_rbuf < 1)
		usage();
	if (opt_threads < 1)
		opt_threads = sysconf(_SC_NPROCESSORS_ONLN);
	if (opt_threads < 1)
		opt_threads = 1;
	signal(SIGPIPE, SIG_IGN);
	pthread_t tids[256];
	if (opt_threads > 256)
		opt_threads = 256;
	for (int i = 0; i < opt_threads; i++) {
		struct worker *w = calloc(1, sizeof *w);
		w->buf = malloc(opt_rbuf > HEADMAX * 2 ? opt_rbuf : HEADMAX * 2);
		if (!w || !w->buf)
			die("calloc");
		if ((w->ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
			die("epoll_create1");
		for (int j = 0; j < nlisten; j++) {
			struct listener *l = calloc(1, sizeof *l);
			l->kind = K_LISTEN;
			l->fwd = fwd ? j : -1;
			l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			int one = 1;
			if (l->fd < 0 || setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
			    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
				die("socket");
			if (opt_defer && !fwd)
				setsockopt(l->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &opt_defer, sizeof opt_defer);
			if (opt_sockbuf) /* inherited by accepted sockets, before the handshake */
				sockopts(l->fd);
			if (bind(l->fd, (struct sockaddr *)&laddr[j], sizeof laddr[j]) < 0)
				die("bind");
			if (listen(l->fd, 4096) < 0)
				die("listen");
			struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = l};
			if (epoll_ctl(w->ep, EPOLL_CTL_ADD, l->fd, &ev) < 0)
				die("epoll_ctl");
		}
		if (pthread_create(&tids[i], NULL, run, w) != 0)
			die("pthread_create");
	}
	for (int j = 0; j < nlisten; j++)
		printf("listening on %s:%d\n", inet_ntoa(laddr[j].sin_addr), ntohs(laddr[j].sin_port));
	fflush(stdout);
	for (int i = 0; i < opt_threads; i++)
		pthread_join(tids[i], NULL);
	return 0;
}
