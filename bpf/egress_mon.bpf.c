// SPDX-License-Identifier: GPL-2.0
/*
 * egress_mon: sees TLS plaintext at SSL_write-like entry points, binds each SSL* to its socket,
 * reports connect() and SMTP-looking plain writes, stops new processes at exec so the loader can
 * hook their binaries first, and (kill mode) SIGKILLs a mail write before the library runs.
 *
 * Every program filters on the watched cgroups first: this runs on every process of the box.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "egress.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET      2
#define AF_INET6     10
#define SOCK_STREAM  1
#define SOCK_DGRAM   2
#define IPPROTO_TCP  6
#define IPPROTO_UDP  17
#define S_IFMT       00170000
#define S_IFSOCK     0140000
#define SIGKILL      9
#define SIGSTOP      19
#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55
#define GNUTLS_NAME_DNS 1

/* Set by the loader before load. */
const volatile bool watch_all;   /* no --cgroup: every process except excluded pids */
const volatile bool kill_mode;
const volatile __u32 chunk_size = EG_CHUNK_MAX;
const volatile __u32 max_chunks = 64;
const volatile __u32 n_markers;
const volatile __u8 marker_len[EG_MARKERS];
const volatile __u8 markers[EG_MARKERS][EG_MARKER_LEN];
const volatile __u32 first_byte[256]; /* bit m set: marker m starts with this byte */

/* Bumped by the loader whenever the watched set changes: invalidates cg_cache. */
__u32 cg_gen = 1;

struct cg_verdict {
	__u32 gen;
	__u32 watched;
};

struct ssl_key {
	__u32 tgid;
	__u32 _pad;
	__u64 ssl;
};

struct fd_key {
	__u32 tgid;
	__s32 fd;
};

struct tls_buf {
	struct eg_tls_write h;
	__u8 data[EG_CHUNK_MAX];
};

struct sock_buf {
	struct eg_sock_write h;
	__u8 data[2 * EG_SOCK_DATA]; /* twice the copy size so the verifier can bound iovec offsets */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EG_STAT_N);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* cgroup ids given with --cgroup / watch_cgroup; descendants count. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} watched SEC(".maps");

/* Verdict per current cgroup, so the ancestor walk runs once per cgroup, not per event. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct cg_verdict);
} cg_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} excluded SEC(".maps");

/* Relay endpoints: struct eg_addr with family and proto zero. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct eg_addr);
	__type(value, __u8);
} relays SEC(".maps");

/* tid → SSL* seen last on that thread and not yet bound: its next socket write binds it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct ssl_key);
} pending SEC(".maps");

/* (tgid, SSL*) → fd, and the reverse, so that one socket never belongs to two live SSL*. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, __s32);
} ssl_fd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fd_key);
	__type(value, __u64);
} fd_ssl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ssl_key);
	__type(value, char[EG_SNI_LEN]);
} sni SEC(".maps");

/* Scratch records, one per CPU (an ARRAY keyed by cpu: per-CPU arrays stop at 32 KiB values). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* the loader sets it to the number of CPUs */
	__type(key, __u32);
	__type(value, struct tls_buf);
} tls_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sock_buf);
} sock_scratch SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);

	if (v)
		(*v)++;
}

static __always_inline bool in_watched_cgroup(void)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct cg_verdict *v = bpf_map_lookup_elem(&cg_cache, &cg);
	struct cg_verdict nv = { .gen = cg_gen };

	if (v && v->gen == nv.gen)
		return v->watched;
	for (int level = 0; level < EG_CG_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (!id)
			break;
		if (bpf_map_lookup_elem(&watched, &id)) {
			nv.watched = 1;
			break;
		}
	}
	bpf_map_update_elem(&cg_cache, &cg, &nv, BPF_ANY);
	return nv.watched;
}

static __always_inline bool is_watched(__u32 tgid)
{
	if (!watch_all && !in_watched_cgroup())
		return false;
	return !bpf_map_lookup_elem(&excluded, &tgid);
}

static __always_inline void fill_proc(struct eg_proc *p, __u32 type)
{
	__u64 id = bpf_get_current_pid_tgid();

	p->type = type;
	p->pid = id >> 32;
	p->tid = (__u32)id;
	p->_pad = 0;
	p->cgroup_id = bpf_get_current_cgroup_id();
	p->ts_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(p->comm, sizeof(p->comm));
}

/* Fixed-size control records; bulk data goes through bpf_ringbuf_output from the scratch maps. */
static __always_inline void *reserve(__u64 size)
{
	void *e = bpf_ringbuf_reserve(&events, size, 0);

	if (!e)
		count(EG_STAT_DROPS);
	return e;
}

static __always_inline void submit(void *e, __u64 flags)
{
	count(EG_STAT_EVENTS);
	bpf_ringbuf_submit(e, flags);
}

static __always_inline void set_v4(struct eg_addr *a, __u32 ip_be)
{
	a->addr[10] = 0xff;
	a->addr[11] = 0xff;
	__builtin_memcpy(&a->addr[12], &ip_be, 4);
	a->family = 4;
}

static __always_inline bool is_relay(const struct eg_addr *d)
{
	struct eg_addr k = {};

	if (!d->family)
		return false;
	__builtin_memcpy(k.addr, d->addr, 16);
	k.port = d->port;
	return bpf_map_lookup_elem(&relays, &k) != NULL;
}

static __always_inline bool smtp_port(__u16 port)
{
	return port == 25 || port == 465 || port == 587 || port == 2525;
}

/* The current task's socket behind fd, or NULL when fd is not a socket. */
static __always_inline struct socket *fd_socket(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (!fdt || fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	return BPF_CORE_READ(f, private_data);
}

/* Peer of an inet socket. family stays 0 for other families and for unconnected sockets. */
static __always_inline void sock_peer(struct socket *sock, struct eg_addr *a)
{
	struct sock *sk = BPF_CORE_READ(sock, sk);
	__u16 family, type;

	__builtin_memset(a, 0, sizeof(*a));
	if (!sk)
		return;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	a->port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		set_v4(a, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	} else if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&a->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		a->family = eg_v4_mapped(a->addr) ? 4 : 6;
	}
	if (!a->port)
		a->family = 0;
	if (!a->family)
		return;
	type = BPF_CORE_READ(sk, sk_type);
	a->proto = type == SOCK_STREAM ? IPPROTO_TCP : type == SOCK_DGRAM ? IPPROTO_UDP : 0;
}

static __always_inline void resolve_fd(int fd, struct eg_addr *a)
{
	struct socket *sock = fd_socket(fd);

	if (sock)
		sock_peer(sock, a);
	else
		__builtin_memset(a, 0, sizeof(*a));
}

/* ---- binding SSL* → fd (notes/ebpf.md §4: 4320/4320 correct) ---- */

static __always_inline struct ssl_key key_of(__u64 ssl)
{
	struct ssl_key k = { .tgid = bpf_get_current_pid_tgid() >> 32, .ssl = ssl };

	return k;
}

/* An SSL* that is not bound yet waits for the next socket write of its thread. */
static __always_inline void mark_pending(struct ssl_key *k)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (!bpf_map_lookup_elem(&ssl_fd, k))
		bpf_map_update_elem(&pending, &tid, k, BPF_ANY);
}

static __always_inline void unbind_fd(__u32 tgid, int fd)
{
	struct fd_key fk = { .tgid = tgid, .fd = fd };
	__u64 *owner = bpf_map_lookup_elem(&fd_ssl, &fk);

	if (owner) {
		struct ssl_key ok = { .tgid = tgid, .ssl = *owner };

		bpf_map_delete_elem(&ssl_fd, &ok);
		bpf_map_delete_elem(&fd_ssl, &fk);
	}
}

static __always_inline void bind(struct ssl_key *k, int fd, __u8 via, struct eg_addr *dst)
{
	struct fd_key fk = { .tgid = k->tgid, .fd = fd };
	__s32 *old = bpf_map_lookup_elem(&ssl_fd, k);
	struct eg_bind *e;

	if (old) {
		struct fd_key ok = { .tgid = k->tgid, .fd = *old };

		bpf_map_delete_elem(&fd_ssl, &ok);
	}
	unbind_fd(k->tgid, fd);
	bpf_map_update_elem(&ssl_fd, k, &fd, BPF_ANY);
	bpf_map_update_elem(&fd_ssl, &fk, &k->ssl, BPF_ANY);

	e = reserve(sizeof(*e));
	if (!e)
		return;
	fill_proc(&e->p, EG_BIND);
	e->ssl = k->ssl;
	e->fd = fd;
	e->via = via;
	e->dst = *dst;
	submit(e, 0);
}

/* ---- TLS plaintext capture ---- */

struct chunk_ctx {
	struct tls_buf *b;
	__u64 buf;
	__u64 len;
};

/* bpf_loop callback: record i of a write (a plain loop over chunks exceeds the verifier limit). */
static long emit_chunk(__u64 i, struct chunk_ctx *c)
{
	struct tls_buf *b = c->b;
	__u64 off = i * chunk_size;
	__u64 cap;

	if (off >= c->len)
		return 1;
	cap = c->len - off < chunk_size ? c->len - off : chunk_size;
	barrier_var(cap);
	if (cap > EG_CHUNK_MAX)
		return 1;
	b->h.offset = off;
	b->h.cap = cap;
	bpf_probe_read_user(b->data, cap, (const void *)(c->buf + off));
	/* bulk data: no wakeup per record, the loader polls (notes §6) */
	if (bpf_ringbuf_output(&events, b, sizeof(b->h) + cap, BPF_RB_NO_WAKEUP))
		count(EG_STAT_DROPS);
	else
		count(EG_STAT_EVENTS);
	return 0;
}

static long emit_next_chunk(__u64 i, struct chunk_ctx *c)
{
	return emit_chunk(i + 1, c);
}

struct scan_ctx {
	struct tls_buf *b;
	__u32 n;   /* bytes to scan */
	__u32 hit; /* marker index + 1 */
};

struct marker_ctx {
	struct scan_ctx *s;
	__u32 pos;
	__u32 mask;
};

/*
 * bpf_loop callback: does marker m start at c->pos? One marker per call: with the markers in
 * .rodata the verifier tracks their bytes, and a nested plain loop over 32 of them can pass its
 * one-million-instruction limit depending on their content.
 */
static long match_marker(__u64 m, struct marker_ctx *c)
{
	__u32 k = m & (EG_MARKERS - 1);
	__u32 len;

	if (m >= EG_MARKERS)
		return 1;
	if (!(c->mask & (1u << k)))
		return 0;
	len = marker_len[k];
	if (c->pos + len > c->s->n)
		return 0;
	for (__u32 j = 1; j < EG_MARKER_LEN; j++) {
		if (j >= len)
			break;
		if (c->s->b->data[(c->pos + j) & (2 * EG_SCAN_LEN - 1)] != markers[k][j])
			return 0;
	}
	c->s->hit = k + 1;
	return 1;
}

/* bpf_loop callback: does a marker start at position i of the first chunk? */
static long scan_at(__u64 i, struct scan_ctx *s)
{
	struct marker_ctx c;

	if (i >= s->n)
		return 1;
	c.s = s;
	c.pos = i & (EG_SCAN_LEN - 1);
	c.mask = first_byte[s->b->data[c.pos]];
	if (!c.mask)
		return 0;
	bpf_loop(EG_MARKERS, match_marker, &c, 0);
	return s->hit ? 1 : 0;
}

static __always_inline void kill_current(__u8 reason, __u8 fn, __u8 marker, struct eg_addr *dst)
{
	struct eg_kill *e;

	bpf_send_signal(SIGKILL);
	e = reserve(sizeof(*e));
	if (!e)
		return;
	fill_proc(&e->p, EG_KILL);
	e->reason = reason;
	e->fn = fn;
	e->marker = marker;
	e->dst = *dst;
	submit(e, BPF_RB_FORCE_WAKEUP);
}

static __always_inline int capture(__u8 fn, __u64 ssl, __u64 buf, __s64 len)
{
	struct ssl_key k = key_of(ssl);
	__u32 cpu = bpf_get_smp_processor_id();
	struct chunk_ctx c = { .buf = buf, .len = len };
	struct tls_buf *b;
	__s32 *fd;
	char *name;
	__u64 n;

	if (!is_watched(k.tgid))
		return 0;
	mark_pending(&k);
	if (len <= 0)
		return 0;
	b = bpf_map_lookup_elem(&tls_scratch, &cpu);
	if (!b)
		return 0;
	fill_proc(&b->h.p, EG_TLS_WRITE);
	b->h.ssl = ssl;
	b->h.len = len;
	b->h.fn = fn;
	fd = bpf_map_lookup_elem(&ssl_fd, &k);
	b->h.fd = fd ? *fd : -1;
	if (fd)
		resolve_fd(*fd, &b->h.dst);
	else
		__builtin_memset(&b->h.dst, 0, sizeof(b->h.dst));
	name = bpf_map_lookup_elem(&sni, &k);
	if (name)
		__builtin_memcpy(b->h.sni, name, EG_SNI_LEN);
	else
		b->h.sni[0] = 0;

	c.b = b;
	emit_chunk(0, &c);
	/* The unbound destination counts as "not the relay": fail closed. */
	if (kill_mode && n_markers && !is_relay(&b->h.dst)) {
		struct scan_ctx s = { .b = b, .n = b->h.cap < EG_SCAN_LEN ? b->h.cap : EG_SCAN_LEN };

		bpf_loop(s.n, scan_at, &s, 0);
		if (s.hit)
			kill_current(EG_KILL_MARKER, fn, s.hit - 1, &b->h.dst);
	}
	n = (len + chunk_size - 1) / chunk_size;
	if (n > max_chunks)
		n = max_chunks;
	if (n > 1)
		bpf_loop(n - 1, emit_next_chunk, &c, 0);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_write, void *ssl, const void *buf, int num)
{
	return capture(EG_FN_SSL_WRITE, (__u64)ssl, (__u64)buf, num);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_ex, void *ssl, const void *buf, __u64 num)
{
	return capture(EG_FN_SSL_WRITE_EX, (__u64)ssl, (__u64)buf, (__s64)num);
}

SEC("uprobe")
int BPF_KPROBE(gnutls_record_send, void *session, const void *buf, __u64 len)
{
	return capture(EG_FN_GNUTLS_SEND, (__u64)session, (__u64)buf, (__s64)len);
}

/* Go's register ABI: RAX = *Conn, RBX = b.ptr, RCX = b.len. */
SEC("uprobe")
int go_tls_write(struct pt_regs *ctx)
{
	return capture(EG_FN_GO_WRITE, ctx->ax, ctx->bx, (__s64)ctx->cx);
}

/* (*Conn).handshakeContext, (*Conn).Read: tls.Dial handshakes before the first Write. */
SEC("uprobe")
int go_tls_pending(struct pt_regs *ctx)
{
	struct ssl_key k = key_of(ctx->ax);

	if (is_watched(k.tgid))
		mark_pending(&k);
	return 0;
}

/* SSL_read, SSL_read_ex, SSL_do_handshake, gnutls_handshake: the handshake's socket writes bind
 * the SSL* before its first plaintext write (node drives its handshake through SSL_read). */
SEC("uprobe")
int BPF_KPROBE(tls_pending, void *ssl)
{
	struct ssl_key k = key_of((__u64)ssl);

	if (is_watched(k.tgid))
		mark_pending(&k);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_set_fd, void *ssl, int fd)
{
	struct ssl_key k = key_of((__u64)ssl);
	struct eg_addr dst;

	if (!is_watched(k.tgid))
		return 0;
	resolve_fd(fd, &dst);
	bind(&k, fd, EG_VIA_SET_FD, &dst);
	return 0;
}

/* SSL_free, gnutls_deinit: freed addresses are reused by new connections. */
SEC("uprobe")
int BPF_KPROBE(tls_free, void *ssl)
{
	struct ssl_key k = key_of((__u64)ssl);
	__s32 *fd;

	if (!is_watched(k.tgid))
		return 0;
	fd = bpf_map_lookup_elem(&ssl_fd, &k);
	if (fd) {
		struct fd_key fk = { .tgid = k.tgid, .fd = *fd };

		bpf_map_delete_elem(&fd_ssl, &fk);
		bpf_map_delete_elem(&ssl_fd, &k);
	}
	bpf_map_delete_elem(&sni, &k);
	return 0;
}

static __always_inline void set_sni(struct ssl_key *k, const void *name, __u32 max)
{
	char buf[EG_SNI_LEN] = {};

	if (!name) {
		bpf_map_delete_elem(&sni, k);
		return;
	}
	if (max > EG_SNI_LEN - 1)
		max = EG_SNI_LEN - 1;
	bpf_probe_read_user_str(buf, max + 1, name);
	bpf_map_update_elem(&sni, k, buf, BPF_ANY);
}

/* SSL_set_tlsext_host_name() is SSL_ctrl(ssl, 55, TLSEXT_NAMETYPE_host_name, name). */
SEC("uprobe")
int BPF_KPROBE(ssl_ctrl, void *ssl, int cmd, long larg, const char *name)
{
	struct ssl_key k;

	if (cmd != SSL_CTRL_SET_TLSEXT_HOSTNAME || larg != 0)
		return 0;
	k = key_of((__u64)ssl);
	if (is_watched(k.tgid))
		set_sni(&k, name, EG_SNI_LEN - 1);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(gnutls_server_name_set, void *session, int type, const char *name, __u64 len)
{
	struct ssl_key k;

	if (type != GNUTLS_NAME_DNS)
		return 0;
	k = key_of((__u64)session);
	if (is_watched(k.tgid))
		set_sni(&k, name, len < EG_SNI_LEN - 1 ? len : EG_SNI_LEN - 1);
	return 0;
}

/* ---- syscalls: one tp_btf/sys_enter with a switch (7x cheaper than per-syscall tracepoints) ---- */

#define NR_write   1
#define NR_writev  20
#define NR_connect 42
#define NR_sendto  44
#define NR_sendmsg 46

static __always_inline bool starts_with(const char *up, __u64 n, const char *verb, int len)
{
	if (n < len)
		return false;
	for (int i = 0; i < len; i++)
		if (up[i] != verb[i])
			return false;
	return true;
}

/* SMTP verbs are case-insensitive. */
static __always_inline bool smtp_verb(const __u8 *p, __u64 n)
{
	char up[9];

	for (int i = 0; i < 9; i++)
		up[i] = p[i] >= 'a' && p[i] <= 'z' ? p[i] - 32 : p[i];
	return starts_with(up, n, "EHLO", 4) || starts_with(up, n, "HELO", 4) ||
	       starts_with(up, n, "RCPT TO", 7) || starts_with(up, n, "MAIL FROM", 9);
}

/* First buffer of a write: the buffer itself, or the first iovec of writev/sendmsg. */
static __always_inline void first_iov(long nr, __u64 a1, __u64 a2, __u64 *iov, __u64 *niov)
{
	struct user_msghdr mh;

	*iov = a1;
	*niov = a2;
	if (nr == NR_sendmsg) {
		bpf_probe_read_user(&mh, sizeof(mh), (void *)a1);
		*iov = (__u64)mh.msg_iov;
		*niov = mh.msg_iovlen;
	}
}

static __always_inline void plain_write(int fd, long nr, __u64 a1, __u64 a2, struct eg_addr *dst)
{
	bool vec = nr == NR_writev || nr == NR_sendmsg;
	__u32 cpu = bpf_get_smp_processor_id();
	struct iovec v = { .iov_base = (void *)a1, .iov_len = a2 };
	__u64 iov = 0, niov = 1, total = 0;
	__u8 head[9] = {};
	struct sock_buf *b;
	__u32 cap = 0;

	if (vec) {
		first_iov(nr, a1, a2, &iov, &niov);
		bpf_probe_read_user(&v, sizeof(v), (void *)iov);
	}
	if (!smtp_port(dst->port)) {
		bpf_probe_read_user(head, sizeof(head), v.iov_base);
		if (!smtp_verb(head, v.iov_len))
			return;
	}
	b = bpf_map_lookup_elem(&sock_scratch, &cpu);
	if (!b)
		return;
	for (int i = 0; i < 8 && i < niov; i++) {
		__u64 n, off = cap;

		if (i > 0)
			bpf_probe_read_user(&v, sizeof(v), (void *)(iov + i * sizeof(v)));
		total += v.iov_len;
		if (cap >= EG_SOCK_DATA)
			continue;
		n = v.iov_len < EG_SOCK_DATA - cap ? v.iov_len : EG_SOCK_DATA - cap;
		/* keep the bound checks on the registers that are passed */
		barrier_var(n);
		barrier_var(off);
		if (n > EG_SOCK_DATA)
			break;
		bpf_probe_read_user(b->data + (off & (EG_SOCK_DATA - 1)), n, v.iov_base);
		cap += n;
	}
	barrier_var(cap);
	if (cap > EG_SOCK_DATA)
		return;
	fill_proc(&b->h.p, EG_SOCK_WRITE);
	b->h.fd = fd;
	b->h.len = total;
	b->h.cap = cap;
	b->h.dst = *dst;
	if (bpf_ringbuf_output(&events, b, sizeof(b->h) + cap, 0))
		count(EG_STAT_DROPS);
	else
		count(EG_STAT_EVENTS);
}

static __always_inline int on_write(int fd, long nr, __u64 a1, __u64 a2)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct socket *sock = fd_socket(fd);
	struct ssl_key *pk;
	struct eg_addr dst;

	if (!sock)
		return 0;
	sock_peer(sock, &dst);
	if (dst.proto != IPPROTO_TCP)
		return 0;
	pk = bpf_map_lookup_elem(&pending, &tid);
	if (pk) {
		struct ssl_key k = *pk;
		struct fd_key fk = { .tgid = k.tgid, .fd = fd };

		bpf_map_delete_elem(&pending, &tid);
		/* bind once per SSL*, and never take a socket another live SSL* owns */
		if (!bpf_map_lookup_elem(&ssl_fd, &k) && !bpf_map_lookup_elem(&fd_ssl, &fk))
			bind(&k, fd, EG_VIA_SOCKET_WRITE, &dst);
	}
	plain_write(fd, nr, a1, a2, &dst);
	return 0;
}

static __always_inline int on_connect(int fd, __u64 uaddr)
{
	struct sockaddr_in6 sa = {};
	struct socket *sock;
	struct eg_addr dst = {};
	struct eg_connect *e;

	bpf_probe_read_user(&sa, sizeof(sa), (void *)uaddr);
	if (sa.sin6_family == AF_INET) {
		set_v4(&dst, ((struct sockaddr_in *)&sa)->sin_addr.s_addr);
	} else if (sa.sin6_family == AF_INET6) {
		__builtin_memcpy(dst.addr, &sa.sin6_addr, 16);
		dst.family = eg_v4_mapped(dst.addr) ? 4 : 6;
	} else {
		return 0;
	}
	dst.port = bpf_ntohs(sa.sin6_port);
	sock = fd_socket(fd);
	if (!sock)
		return 0;
	dst.proto = BPF_CORE_READ(sock, type) == SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP;
	/* a fresh connection on this fd: whatever SSL* owned the fd before does not any more */
	unbind_fd(bpf_get_current_pid_tgid() >> 32, fd);

	e = reserve(sizeof(*e));
	if (e) {
		fill_proc(&e->p, EG_CONNECT);
		e->fd = fd;
		e->_pad = 0;
		e->dst = dst;
		submit(e, 0);
	}
	if (kill_mode && dst.proto == IPPROTO_TCP && smtp_port(dst.port) && !is_relay(&dst))
		kill_current(EG_KILL_SMTP_CONNECT, 0, 0, &dst);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	switch (id) {
	case NR_write:
	case NR_writev:
	case NR_connect:
	case NR_sendto:
	case NR_sendmsg:
		break;
	default:
		return 0;
	}
	if (!is_watched(bpf_get_current_pid_tgid() >> 32))
		return 0;
	if (id == NR_connect)
		return on_connect(regs->di, regs->si);
	return on_write(regs->di, id, regs->si, regs->dx);
}

/* Stop-on-exec: a process starting in a watched cgroup waits until the loader has hooked its
 * binary, so even its first write is seen. Only explicit --cgroup trees are stopped. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	bool stop = in_watched_cgroup();
	struct eg_exec *e;

	if ((!stop && !watch_all) || bpf_map_lookup_elem(&excluded, &tgid))
		return 0;
	e = reserve(sizeof(*e));
	if (!e)
		return 0; /* nobody would continue it: do not stop */
	fill_proc(&e->p, EG_EXEC);
	e->stopped = stop;
	if (stop)
		bpf_send_signal(SIGSTOP);
	submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}
