/* floor.h: what floor.c (threads, relay) and floor_head.c (the
 * handshakes) share. See floor.c. */
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

/* floor.c */
void kill_tun(struct worker *w, struct tun *t);
int stash(struct dir *d, const char *p, int n);
void passeof(struct worker *w, struct tun *t, int s);
void dial(struct worker *w, struct tun *t);

/* floor_head.c */
void handshake(struct worker *w, struct tun *t);
int rewrite_get(struct worker *w, struct tun *t);
int hostport(const char *p, int n, struct sockaddr_in *sa);
int answer(struct worker *w, struct tun *t);
void fail(struct worker *w, struct tun *t);
