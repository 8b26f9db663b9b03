// SPDX-License-Identifier: GPL-2.0
/*
 * egress_enforce: the in-kernel fence for an agent cgroup. connect() and unconnected UDP sends may
 * only go to allow-listed (address, port, protocol) entries; everything else gets EPERM, whatever
 * library or language makes the call. IPv4-mapped IPv6 is judged as IPv4 (same key).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "egress.h"

char LICENSE[] SEC("license") = "GPL";

#define SOCK_STREAM 1
#define SOCK_DGRAM  2
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

/* Key: struct eg_addr with family 0 and proto set (--allow: TCP; --dns: TCP and UDP). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct eg_addr);
	__type(value, __u8);
} allow SEC(".maps");

/* Denials, read by `enforce --follow`; when nobody reads, the ring fills and records are dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} denials SEC(".maps");

static __always_inline int judge(struct bpf_sock_addr *ctx, struct eg_addr *k, __u8 hook)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct eg_deny *e;

	k->port = bpf_ntohs((__u16)ctx->user_port);
	k->proto = ctx->type == SOCK_STREAM ? IPPROTO_TCP : ctx->type == SOCK_DGRAM ? IPPROTO_UDP : 0;
	if (k->proto && bpf_map_lookup_elem(&allow, k))
		return 1;

	e = bpf_ringbuf_reserve(&denials, sizeof(*e), 0);
	if (e) {
		e->p.type = EG_DENY;
		e->p.pid = id >> 32;
		e->p.tid = (__u32)id;
		e->p._pad = 0;
		e->p.cgroup_id = bpf_get_current_cgroup_id();
		e->p.ts_ns = bpf_ktime_get_ns();
		bpf_get_current_comm(e->p.comm, sizeof(e->p.comm));
		e->hook = hook;
		e->dst = *k;
		e->dst.family = eg_v4_mapped(k->addr) ? 4 : 6;
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}

static __always_inline int judge4(struct bpf_sock_addr *ctx, __u8 hook)
{
	struct eg_addr k = {};
	__u32 ip = ctx->user_ip4;

	k.addr[10] = 0xff;
	k.addr[11] = 0xff;
	__builtin_memcpy(&k.addr[12], &ip, 4);
	return judge(ctx, &k, hook);
}

static __always_inline int judge6(struct bpf_sock_addr *ctx, __u8 hook)
{
	struct eg_addr k = {};

	/* ctx fields: constant offsets only, one 32-bit word at a time */
	__u32 w[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };

	__builtin_memcpy(k.addr, w, 16);
	return judge(ctx, &k, hook);
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return judge4(ctx, EG_HOOK_CONNECT4);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return judge6(ctx, EG_HOOK_CONNECT6);
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return judge4(ctx, EG_HOOK_SENDMSG4);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return judge6(ctx, EG_HOOK_SENDMSG6);
}
