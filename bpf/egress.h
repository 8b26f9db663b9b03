/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Records shared by the kernel programs (egress_mon.bpf.c, egress_enforce.bpf.c) and the loader
 * (egressd.c): the single definition of what travels through the ring buffers and the map keys.
 * Include it after vmlinux.h (BPF) or <linux/types.h> (user space).
 */
#ifndef EGRESS_H
#define EGRESS_H

#define EG_CHUNK_MAX   16384 /* largest TLS plaintext chunk per record (one TLS record) */
#define EG_SOCK_DATA   4096  /* plain socket writes: first bytes kept */
#define EG_SNI_LEN     128
#define EG_MARKERS     32    /* --marker strings scanned in the kernel */
#define EG_MARKER_LEN  48
#define EG_SCAN_LEN    512   /* a marker must lie within the first EG_SCAN_LEN bytes of a write */
#define EG_CG_DEPTH    16    /* cgroup ancestors checked for "descendants count" */

enum eg_type {
	EG_TLS_WRITE = 1, /* struct eg_tls_write + cap data bytes */
	EG_BIND,          /* struct eg_bind */
	EG_SOCK_WRITE,    /* struct eg_sock_write + cap data bytes */
	EG_CONNECT,       /* struct eg_connect */
	EG_EXEC,          /* struct eg_exec */
	EG_KILL,          /* struct eg_kill */
	EG_DENY,          /* struct eg_deny (enforce ring buffer) */
};

enum eg_fn { EG_FN_SSL_WRITE = 1, EG_FN_SSL_WRITE_EX, EG_FN_GNUTLS_SEND, EG_FN_GO_WRITE };
enum eg_via { EG_VIA_SET_FD = 1, EG_VIA_SOCKET_WRITE };
enum eg_reason { EG_KILL_MARKER = 1, EG_KILL_SMTP_CONNECT };
enum eg_hook { EG_HOOK_CONNECT4 = 1, EG_HOOK_CONNECT6, EG_HOOK_SENDMSG4, EG_HOOK_SENDMSG6 };

/*
 * An IP endpoint. IPv4 is stored IPv4-mapped (::ffff:a.b.c.d) so that one key type serves both
 * families and a v4-mapped IPv6 destination compares equal to its IPv4 form.
 */
struct eg_addr {
	__u8 addr[16];
	__u16 port;   /* host byte order */
	__u8 family;  /* 0 unknown, 4, 6 (4 also for v4-mapped IPv6) */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP in map keys and connect events; else 0 */
};

struct eg_proc {
	__u32 type;
	__u32 pid; /* host tgid */
	__u32 tid;
	__u32 _pad;
	__u64 cgroup_id;
	__u64 ts_ns;
	char comm[16];
};

struct eg_tls_write {
	struct eg_proc p;
	__u64 ssl;
	__u64 len;    /* the whole write */
	__u64 offset; /* of this chunk */
	__u32 cap;    /* bytes following this header */
	__s32 fd;     /* -1 while the SSL* is not bound */
	struct eg_addr dst;
	__u8 fn;
	__u8 _pad[7];
	char sni[EG_SNI_LEN];
};

struct eg_bind {
	struct eg_proc p;
	__u64 ssl;
	__s32 fd;
	__u8 via;
	__u8 _pad[3];
	struct eg_addr dst;
};

struct eg_sock_write {
	struct eg_proc p;
	__u64 len;
	__u32 cap;
	__s32 fd;
	struct eg_addr dst;
};

struct eg_connect {
	struct eg_proc p;
	__s32 fd;
	__u32 _pad;
	struct eg_addr dst;
};

struct eg_exec {
	struct eg_proc p;
	__u8 stopped; /* SIGSTOPped: the loader must SIGCONT it */
	__u8 _pad[7];
};

struct eg_kill {
	struct eg_proc p;
	__u8 reason;
	__u8 fn;     /* enum eg_fn for markers; 0 for smtp_connect (syscall connect) */
	__u8 marker; /* index into the --marker list */
	__u8 _pad[5];
	struct eg_addr dst;
};

struct eg_deny {
	struct eg_proc p;
	__u8 hook;
	__u8 _pad[7];
	struct eg_addr dst;
};

/* ::ffff:a.b.c.d, which is printed and judged as IPv4 */
static inline __attribute__((always_inline)) int eg_v4_mapped(const __u8 *a)
{
	for (int i = 0; i < 10; i++)
		if (a[i])
			return 0;
	return a[10] == 0xff && a[11] == 0xff;
}

/* Kernel counters summed by the loader over CPUs. */
enum eg_stat { EG_STAT_EVENTS, EG_STAT_DROPS, EG_STAT_N };

#endif
