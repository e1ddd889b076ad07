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
 *   cc -O2 -pthread -o floor floor.c floor_head.c
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
#include "floor.h"

static int opt_threads, opt_splice, opt_rbuf = 65536, opt_pipe, opt_sockbuf, opt_defer = 1, opt_nodelay = 1;
static int nlisten;
static struct sockaddr_in laddr[MAXFWD], taddr[MAXFWD];

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
void kill_tun(struct worker *w, struct tun *t)
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

int stash(struct dir *d, const char *p, int n)
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

/* passeof passes on EOF from end s; it closes the tunnel when both
 * directions have ended. */
void passeof(struct worker *w, struct tun *t, int s)
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
	if (answer(w, t) < 0) {
		kill_tun(w, t);
		return;
	}
	relay(w, t);
}

void dial(struct worker *w, struct tun *t)
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
		fail(w, t);
		return;
	}
	watch(w, &t->e[1]);
	if (r == 0) { /* loopback connects at once, mostly */
		connected(w, t);
		return;
	}
	t->state = S_CONNECTING; /* until the first writable edge */
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
			fail(w, t);
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
