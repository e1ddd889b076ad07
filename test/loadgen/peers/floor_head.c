/* floor_head.c: the floor's handshakes (HTTP CONNECT, SOCKS5, absolute-URI
 * GETs rewritten to origin form) and its answers. See floor.c. */
#include "floor.h"

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
/* answer tells the client that its tunnel is up; 0, or -1 when it is
 * gone. */
int answer(struct worker *w, struct tun *t)
{
	(void)w;
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
	return n && write(t->e[0].fd, msg, n) != (ssize_t)n ? -1 : 0;
}

/* fail tells the client that the origin could not be reached, and
 * closes the tunnel. */
void fail(struct worker *w, struct tun *t)
{
	if (t->proto == P_SOCKS)
		refuse(w, t, socks_fail, sizeof socks_fail);
	else if (t->proto == P_FORWARD)
		kill_tun(w, t);
	else
		refuse(w, t, http502, sizeof http502 - 1);
}

/* hostport parses "A.B.C.D:PORT" of n bytes into sa. */
int hostport(const char *p, int n, struct sockaddr_in *sa)
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
int rewrite_get(struct worker *w, struct tun *t)
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
void handshake(struct worker *w, struct tun *t)
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
