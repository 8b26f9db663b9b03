// SPDX-License-Identifier: Apache-2.0
/*
 * egressd: loads the egress BPF programs, attaches the probes and prints what they see as NDJSON
 * (bpf/PROTOCOL.md). It owns no policy: src/monitor decides.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>
#include <linux/types.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "egress.h"
#include "egress_mon.skel.h"
#include "egress_enforce.skel.h"

#define PROTOCOL_VERSION 1
#define POLL_MS 20          /* bulk records are written without wakeup: this bounds their latency */
#define TICK_NS 5000000000ULL
#define PRIV_MSG "postguard monitor needs root (CAP_SYS_ADMIN) to attach uprobes"

static void die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("egressd: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return level == LIBBPF_DEBUG && !getenv("EGRESSD_DEBUG") ? 0 : vfprintf(stderr, fmt, ap);
}

static __u64 now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* ---- NDJSON output: one object per line, flushed per line ---- */

static char *ob;
static size_t olen, ocap;

static void reserve_out(size_t n)
{
	if (olen + n + 1 <= ocap)
		return;
	ocap = (olen + n + 1) * 2;
	ob = realloc(ob, ocap);
	if (!ob)
		die(1, "out of memory");
}

static void put(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	reserve_out(n);
	va_start(ap, fmt);
	vsnprintf(ob + olen, n + 1, fmt, ap);
	va_end(ap);
	olen += n;
}

/* A JSON string of at most max bytes of s (comm and SNI come from the kernel unterminated). */
static void put_str(const char *s, size_t max)
{
	reserve_out(2);
	ob[olen++] = '"';
	for (size_t i = 0; i < max && s[i]; i++) {
		unsigned char c = s[i];

		if (c == '"' || c == '\\')
			put("\\%c", c);
		else if (c < 0x20)
			put("\\u%04x", c);
		else {
			reserve_out(1);
			ob[olen++] = c;
		}
	}
	reserve_out(1);
	ob[olen++] = '"';
}

static void put_key_str(const char *key, const char *s)
{
	put(",\"%s\":", key);
	put_str(s, SIZE_MAX);
}

static void put_b64(const __u8 *p, size_t n)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	reserve_out(4 * (n / 3 + 1) + 2);
	ob[olen++] = '"';
	for (size_t i = 0; i < n; i += 3) {
		__u32 v = p[i] << 16 | (i + 1 < n ? p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);

		ob[olen++] = t[v >> 18 & 63];
		ob[olen++] = t[v >> 12 & 63];
		ob[olen++] = i + 1 < n ? t[v >> 6 & 63] : '=';
		ob[olen++] = i + 2 < n ? t[v & 63] : '=';
	}
	ob[olen++] = '"';
}

static void begin(const char *type)
{
	olen = 0;
	put("{\"type\":\"%s\"", type);
}

static void emit(void)
{
	put("}\n");
	if (fwrite(ob, 1, olen, stdout) != olen || fflush(stdout))
		exit(1); /* the reader is gone */
}

static void emit_error(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	begin("error");
	put_key_str("message", msg);
	emit();
}

static void put_proc(const struct eg_proc *p)
{
	put(",\"pid\":%u,\"tid\":%u,\"cgroup_id\":%llu,\"comm\":", p->pid, p->tid,
	    (unsigned long long)p->cgroup_id);
	put_str(p->comm, sizeof(p->comm));
	put(",\"ts_ns\":%llu", (unsigned long long)p->ts_ns);
}

static void put_addr(const struct eg_addr *a)
{
	char s[INET6_ADDRSTRLEN];

	if (!a->family) {
		put(",\"daddr\":null,\"dport\":null,\"family\":null");
		return;
	}
	if (a->family == 4)
		inet_ntop(AF_INET, a->addr + 12, s, sizeof(s));
	else
		inet_ntop(AF_INET6, a->addr, s, sizeof(s));
	put(",\"daddr\":\"%s\",\"dport\":%u,\"family\":%u", s, a->port, a->family);
}

static const char *proto_name(__u8 proto)
{
	return proto == IPPROTO_UDP ? "udp" : "tcp";
}

/* ---- small parsers ---- */

/* "IP:PORT" or "[IPv6]:PORT" → a map key (family and proto 0). IPv4 is stored v4-mapped. */
static int parse_endpoint(const char *s, struct eg_addr *a)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(s, ':');
	size_t n;
	char *end;
	long port;

	memset(a, 0, sizeof(*a));
	if (!colon || (n = colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, n);
	host[n] = 0;
	port = strtol(colon + 1, &end, 10);
	if (*end || port <= 0 || port > 65535)
		return -1;
	a->port = port;
	if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
		host[n - 1] = 0;
		return inet_pton(AF_INET6, host + 1, a->addr) == 1 ? 0 : -1;
	}
	a->addr[10] = a->addr[11] = 0xff;
	return inet_pton(AF_INET, host, a->addr + 12) == 1 ? 0 : -1;
}

static int parse_addr_port(const char *addr, long port, struct eg_addr *a)
{
	char buf[INET6_ADDRSTRLEN + 16];

	snprintf(buf, sizeof(buf), strchr(addr, ':') ? "[%s]:%ld" : "%s:%ld", addr, port);
	return parse_endpoint(buf, a);
}

static long parse_num(const char *s, long min, long max, const char *what)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (!*s || *end || v < min || v > max)
		die(1, "bad %s: %s", what, s);
	return v;
}

/* The commands are flat objects of strings and numbers: {"cmd":"relay","addr":"::1","port":25}. */
#define KV_MAX 8
struct kv {
	char key[32];
	char val[PATH_MAX];
};

static const char *json_string(const char *s, char *out, size_t cap)
{
	size_t n = 0;

	for (s++; *s && *s != '"'; s++) {
		char c = *s;

		if (c == '\\') {
			c = *++s;
			if (c == 'n')
				c = '\n';
			else if (c == 't')
				c = '\t';
			else if (c == 'u') {
				unsigned v;

				if (sscanf(s + 1, "%4x", &v) != 1 || v > 0x7f)
					return NULL; /* paths and addresses are ASCII here */
				c = v;
				s += 4;
			} else if (c != '"' && c != '\\' && c != '/')
				return NULL;
		}
		if (n + 1 >= cap)
			return NULL;
		out[n++] = c;
	}
	out[n] = 0;
	return *s == '"' ? s + 1 : NULL;
}

static int parse_command(const char *s, struct kv *kv)
{
	int n = 0;

	while (isspace(*s))
		s++;
	if (*s++ != '{')
		return -1;
	for (;;) {
		while (isspace(*s))
			s++;
		if (*s == '}')
			return n;
		if (n == KV_MAX || *s != '"' || !(s = json_string(s, kv[n].key, sizeof(kv[n].key))))
			return -1;
		while (isspace(*s))
			s++;
		if (*s++ != ':')
			return -1;
		while (isspace(*s))
			s++;
		if (*s == '"') {
			if (!(s = json_string(s, kv[n].val, sizeof(kv[n].val))))
				return -1;
		} else {
			size_t len = strcspn(s, ",} \t\r\n");

			if (!len || len >= sizeof(kv[n].val))
				return -1;
			memcpy(kv[n].val, s, len);
			kv[n].val[len] = 0;
			s += len;
		}
		n++;
		while (isspace(*s))
			s++;
		if (*s == ',')
			s++;
		else if (*s != '}')
			return -1;
	}
}

static const char *kv_get(struct kv *kv, int n, const char *key)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(kv[i].key, key))
			return kv[i].val;
	return NULL;
}

/* ---- cgroup v2 and bpffs ---- */

static bool cgroup2_mount(char *out, size_t cap)
{
	FILE *f = fopen("/proc/mounts", "re");
	char dev[256], dir[PATH_MAX], type[64];
	bool found = false;

	if (!f)
		return false;
	while (!found && fscanf(f, "%255s %4095s %63s %*[^\n]", dev, dir, type) == 3)
		if (!strcmp(type, "cgroup2"))
			found = snprintf(out, cap, "%s", dir) < (int)cap;
	fclose(f);
	return found;
}

struct cgroup {
	__u64 id;            /* the cgroup's inode number, as bpf_get_current_cgroup_id() reports it */
	char path[PATH_MAX]; /* absolute */
	char rel[PATH_MAX];  /* below the cgroup2 mount, as in /proc/PID/cgroup ("/" for the root) */
};

/* PATH is a cgroup2 directory, or a path relative to the cgroup2 mount. */
static int resolve_cgroup(const char *path, struct cgroup *cg)
{
	char mnt[PATH_MAX], buf[PATH_MAX * 2];
	struct statfs sf;
	struct stat st;
	size_t ml;

	if (!cgroup2_mount(mnt, sizeof(mnt)))
		die(2, "no cgroup2 mount in /proc/mounts (the kernel feature cgroup v2 is needed)");
	if (statfs(path, &sf) || sf.f_type != CGROUP2_SUPER_MAGIC) {
		snprintf(buf, sizeof(buf), "%s/%s", mnt, path);
		path = buf;
	}
	if (!realpath(path, cg->path) || statfs(cg->path, &sf) || sf.f_type != CGROUP2_SUPER_MAGIC ||
	    stat(cg->path, &st) || !S_ISDIR(st.st_mode))
		return -1;
	ml = strlen(mnt);
	if (strncmp(cg->path, mnt, ml) || (cg->path[ml] && cg->path[ml] != '/'))
		return -1;
	snprintf(cg->rel, sizeof(cg->rel), "%s", cg->path[ml] ? cg->path + ml : "/");
	cg->id = st.st_ino;
	return 0;
}

static void ensure_bpffs(void)
{
	struct statfs sf;

	if (!statfs("/sys/fs/bpf", &sf) && sf.f_type == BPF_FS_MAGIC)
		return;
	mkdir("/sys/fs/bpf", 0700);
	if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700"))
		die(errno == EPERM ? 2 : 1, "cannot mount bpffs at /sys/fs/bpf: %s (needs CAP_SYS_ADMIN)",
		    strerror(errno));
}

static void mkdir_p(const char *dir)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s", dir);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		mkdir(p, 0700);
		*s = '/';
	}
	if (mkdir(p, 0700) && errno != EEXIST)
		die(1, "mkdir %s: %s", p, strerror(errno));
}

/* ---- monitor: binaries and their TLS symbols ---- */

enum lib { LIB_OPENSSL, LIB_GNUTLS, LIB_GO, LIB_N };
static const char *const lib_names[LIB_N] = { "openssl", "gnutls", "go" };

struct hook {
	const char *sym;
	int lib; /* enum lib */
	bool writes; /* a plaintext capture point: the library counts as hookable only with one */
	const char *prog;
};

static const struct hook hooks[] = {
	{ "SSL_write", LIB_OPENSSL, true, "ssl_write" },
	{ "SSL_write_ex", LIB_OPENSSL, true, "ssl_write_ex" },
	{ "SSL_read", LIB_OPENSSL, false, "tls_pending" },
	{ "SSL_read_ex", LIB_OPENSSL, false, "tls_pending" },
	{ "SSL_do_handshake", LIB_OPENSSL, false, "tls_pending" },
	{ "SSL_set_fd", LIB_OPENSSL, false, "ssl_set_fd" },
	{ "SSL_free", LIB_OPENSSL, false, "tls_free" },
	{ "SSL_ctrl", LIB_OPENSSL, false, "ssl_ctrl" },
	{ "gnutls_record_send", LIB_GNUTLS, true, "gnutls_record_send" },
	{ "gnutls_handshake", LIB_GNUTLS, false, "tls_pending" },
	{ "gnutls_deinit", LIB_GNUTLS, false, "tls_free" },
	{ "gnutls_server_name_set", LIB_GNUTLS, false, "gnutls_server_name_set" },
	{ "crypto/tls.(*Conn).Write", LIB_GO, true, "go_tls_write" },
	{ "crypto/tls.(*Conn).handshakeContext", LIB_GO, false, "go_tls_pending" },
	{ "crypto/tls.(*Conn).Read", LIB_GO, false, "go_tls_pending" },
};
#define NHOOKS (sizeof(hooks) / sizeof(hooks[0]))

struct elf_info {
	unsigned found; /* bit i: hooks[i] is a defined function */
	bool is_static; /* no PT_INTERP */
	bool is_go;
};

static int scan_elf(const char *path, struct elf_info *info)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t shstrndx, nph;
	Elf_Scn *scn = NULL;
	Elf *e;

	memset(info, 0, sizeof(*info));
	if (fd < 0)
		return -errno;
	e = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (!e || elf_kind(e) != ELF_K_ELF || elf_getshdrstrndx(e, &shstrndx) || elf_getphdrnum(e, &nph)) {
		if (e)
			elf_end(e);
		close(fd);
		return -ENOEXEC;
	}
	info->is_static = true;
	for (size_t i = 0; i < nph; i++) {
		GElf_Phdr ph;

		if (gelf_getphdr(e, i, &ph) && ph.p_type == PT_INTERP)
			info->is_static = false;
	}
	while ((scn = elf_nextscn(e, scn))) {
		GElf_Shdr sh;
		Elf_Data *d;
		const char *name;

		if (!gelf_getshdr(scn, &sh))
			continue;
		name = elf_strptr(e, shstrndx, sh.sh_name);
		if (name && (!strcmp(name, ".gopclntab") || !strcmp(name, ".go.buildinfo")))
			info->is_go = true;
		if ((sh.sh_type != SHT_SYMTAB && sh.sh_type != SHT_DYNSYM) || !sh.sh_entsize ||
		    !(d = elf_getdata(scn, NULL)))
			continue;
		for (size_t i = 0; i < sh.sh_size / sh.sh_entsize; i++) {
			GElf_Sym s;
			const char *sym;

			if (!gelf_getsym(d, i, &s) || GELF_ST_TYPE(s.st_info) != STT_FUNC ||
			    s.st_shndx == SHN_UNDEF || !(sym = elf_strptr(e, sh.sh_link, s.st_name)))
				continue;
			if (sym[0] != 'S' && sym[0] != 'g' && sym[0] != 'c')
				continue;
			for (size_t h = 0; h < NHOOKS; h++)
				if (!strcmp(sym, hooks[h].sym))
					info->found |= 1u << h;
		}
	}
	elf_end(e);
	close(fd);
	return 0;
}

/* Hookable symbols only: a library without a capture point is not worth a trap. */
static unsigned hookable(unsigned found)
{
	unsigned libs = 0, out = 0;

	for (size_t h = 0; h < NHOOKS; h++)
		if (found & 1u << h && hooks[h].writes)
			libs |= 1u << hooks[h].lib;
	for (size_t h = 0; h < NHOOKS; h++)
		if (found & 1u << h && libs & 1u << hooks[h].lib)
			out |= 1u << h;
	return out;
}

/* Every file considered once, by (dev, ino): uprobes belong to the inode, so one attach covers all
 * current and future processes mapping it. Container roots are remembered here too. */
struct binary {
	dev_t dev;
	ino_t ino;
	unsigned hooked;             /* hooks attached */
	char error[LIB_N][160];      /* per library, when its attach failed */
};

static struct binary *binaries;
static size_t nbinaries;

static struct binary *binary_of(const struct stat *st, bool *fresh)
{
	for (size_t i = 0; i < nbinaries; i++)
		if (binaries[i].dev == st->st_dev && binaries[i].ino == st->st_ino) {
			*fresh = false;
			return &binaries[i];
		}
	binaries = realloc(binaries, (nbinaries + 1) * sizeof(*binaries));
	if (!binaries)
		die(1, "out of memory");
	memset(&binaries[nbinaries], 0, sizeof(*binaries));
	binaries[nbinaries].dev = st->st_dev;
	binaries[nbinaries].ino = st->st_ino;
	*fresh = true;
	return &binaries[nbinaries++];
}

static struct egress_mon_bpf *mon;
static int probes;
static bool watch_all;
static struct cgroup *cgroups;
static size_t ncgroups;
static int *excluded_pids;
static size_t nexcluded;

static void print_attach(const struct binary *b, const char *shown, int lib)
{
	bool first = true;

	begin("attach");
	put_key_str("path", shown);
	put(",\"dev\":%llu,\"ino\":%llu,\"lib\":\"%s\",\"symbols\":[", (unsigned long long)b->dev,
	    (unsigned long long)b->ino, lib_names[lib]);
	for (size_t h = 0; h < NHOOKS; h++) {
		if (!(b->hooked & 1u << h) || hooks[h].lib != lib)
			continue;
		put(first ? "" : ",");
		put_str(hooks[h].sym, SIZE_MAX);
		first = false;
	}
	put("],\"ok\":%s", b->error[lib][0] ? "false" : "true");
	if (b->error[lib][0])
		put_key_str("error", b->error[lib]);
	emit();
}

static void attach_hooks(struct binary *b, const char *path, const char *shown, unsigned want)
{
	for (int lib = 0; lib < LIB_N; lib++) {
		bool any = false;

		for (size_t h = 0; h < NHOOKS; h++) {
			LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = hooks[h].sym);
			struct bpf_program *prog;
			struct bpf_link *link;

			if (!(want & 1u << h) || hooks[h].lib != lib)
				continue;
			any = true;
			prog = bpf_object__find_program_by_name(mon->obj, hooks[h].prog);
			link = bpf_program__attach_uprobe_opts(prog, -1, path, 0, &opts);
			if (!link) {
				int err = errno;

				if (!probes && (err == EACCES || err == EPERM))
					die(2, PRIV_MSG);
				snprintf(b->error[lib], sizeof(b->error[lib]), "%s: %s", hooks[h].sym,
					 strerror(err));
				continue;
			}
			b->hooked |= 1u << h;
			probes++;
		}
		if (any)
			print_attach(b, shown, lib);
	}
}

/*
 * Looks at one file mapped or run by a watched process (path is how to reach it: /proc/PID/exe,
 * /proc/PID/root/..., shown is how to name it). main_pid > 0: it is that process's executable,
 * whose lack of TLS symbols is reported when it looks like TLS could hide in it. explicit: the
 * `attach` command, which always answers.
 */
static void consider(const char *path, const char *shown, int main_pid, bool explicit)
{
	struct elf_info info;
	struct binary *b;
	struct stat st;
	bool fresh;
	int err;

	if (stat(path, &st) || !S_ISREG(st.st_mode)) {
		if (explicit) {
			begin("attach");
			put_key_str("path", shown);
			put(",\"ok\":false");
			put_key_str("error", errno ? strerror(errno) : "not a regular file");
			emit();
		}
		return;
	}
	b = binary_of(&st, &fresh);
	if (!fresh) {
		for (int lib = 0; explicit && lib < LIB_N; lib++)
			for (size_t h = 0; h < NHOOKS; h++)
				if (hooks[h].lib == lib && (b->hooked & 1u << h || b->error[lib][0])) {
					print_attach(b, shown, lib);
					break;
				}
		return;
	}
	err = scan_elf(path, &info);
	if (!err && hookable(info.found)) {
		attach_hooks(b, path, shown, hookable(info.found));
		return;
	}
	if (main_pid > 0 && !err && (info.is_go || info.is_static)) {
		begin("uncovered");
		put_key_str("path", shown);
		put(",\"pid\":%d", main_pid);
		put_key_str("reason", info.is_go ? "Go binary without crypto/tls symbols (stripped?)"
						 : "static binary without TLS symbols (stripped?)");
		emit();
	} else if (explicit) {
		begin("attach");
		put_key_str("path", shown);
		put(",\"dev\":%llu,\"ino\":%llu,\"ok\":false", (unsigned long long)st.st_dev,
		    (unsigned long long)st.st_ino);
		put_key_str("error", err ? strerror(-err) : "no TLS symbols");
		emit();
	}
}

/* libssl/libgnutls of a root file system ("" = ours): programs load them later (python's _ssl). */
static void attach_libs(const char *root)
{
	static const char *const dirs[] = { "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
					    "/usr/lib64", "/lib64", "/usr/lib", "/lib",
					    "/usr/local/lib" };

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		char dir[PATH_MAX], path[PATH_MAX * 2], real[PATH_MAX];
		struct dirent *de;
		DIR *d;

		snprintf(dir, sizeof(dir), "%s%s", root, dirs[i]);
		if (!(d = opendir(dir)))
			continue;
		while ((de = readdir(d))) {
			if (strncmp(de->d_name, "libssl.so", 9) && strncmp(de->d_name, "libgnutls.so", 12))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			/* name our own files by their real path; a container's symlinks point into it */
			consider(path, !*root && realpath(path, real) ? real : path, 0, false);
		}
		closedir(d);
	}
}

static bool pid_excluded(int pid)
{
	for (size_t i = 0; i < nexcluded; i++)
		if (excluded_pids[i] == pid)
			return true;
	return pid == getpid();
}

static bool pid_watched(int pid)
{
	char path[64], line[PATH_MAX + 8];
	bool yes = false;
	FILE *f;

	if (pid_excluded(pid))
		return false;
	if (watch_all)
		return true;
	snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
	if (!(f = fopen(path, "re")))
		return false;
	while (!yes && fgets(line, sizeof(line), f)) {
		char *rel = line + 3;

		if (strncmp(line, "0::", 3))
			continue;
		rel[strcspn(rel, "\n")] = 0;
		for (size_t i = 0; i < ncgroups && !yes; i++) {
			size_t n = strlen(cgroups[i].rel);

			yes = !strcmp(cgroups[i].rel, "/") ||
			      (!strncmp(rel, cgroups[i].rel, n) && (!rel[n] || rel[n] == '/'));
		}
	}
	fclose(f);
	return yes;
}

/* A watched process: its executable, a container root's libraries, and every executable mapping. */
static void scan_pid(int pid)
{
	char path[PATH_MAX * 2], exe[PATH_MAX], line[PATH_MAX + 128];
	struct stat root, ours;
	ssize_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/exe", pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	if (n <= 0)
		return; /* kernel thread, or gone */
	exe[n] = 0;
	consider(path, exe, pid, false);

	snprintf(path, sizeof(path), "/proc/%d/root", pid);
	if (!stat(path, &root) && !stat("/", &ours) && (root.st_dev != ours.st_dev || root.st_ino != ours.st_ino)) {
		bool fresh;

		binary_of(&root, &fresh);
		if (fresh)
			attach_libs(path);
	}

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	if (!(f = fopen(path, "re")))
		return;
	while (fgets(line, sizeof(line), f)) {
		char perms[8], file[PATH_MAX];

		if (sscanf(line, "%*x-%*x %7s %*x %*x:%*x %*u %4095[^\n]", perms, file) != 2 ||
		    perms[2] != 'x' || file[0] != '/' || strstr(file, " (deleted)"))
			continue;
		snprintf(path, sizeof(path), "/proc/%d/root%s", pid, file);
		consider(path, file, 0, false);
	}
	fclose(f);
}

static void scan_processes(void)
{
	DIR *d = opendir("/proc");
	struct dirent *de;

	if (!d)
		die(1, "/proc: %s", strerror(errno));
	while ((de = readdir(d))) {
		int pid = atoi(de->d_name);

		if (pid > 0 && pid_watched(pid))
			scan_pid(pid);
	}
	closedir(d);
}

/* ---- monitor: kernel events ---- */

static const char *const fn_names[] = {
	[EG_FN_SSL_WRITE] = "SSL_write",
	[EG_FN_SSL_WRITE_EX] = "SSL_write_ex",
	[EG_FN_GNUTLS_SEND] = "gnutls_record_send",
	[EG_FN_GO_WRITE] = "go_tls_write",
};

static const char *fn_name(__u8 fn)
{
	return fn < sizeof(fn_names) / sizeof(fn_names[0]) && fn_names[fn] ? fn_names[fn] : "?";
}

static char **markers;
static size_t nmarkers;

static void on_exec(const struct eg_exec *e)
{
	char path[64], exe[PATH_MAX] = "";
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%u/exe", e->p.pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		scan_pid(e->p.pid);
	}
	begin("exec");
	put_proc(&e->p);
	put_key_str("exe", exe);
	put(",\"stopped\":%s", e->stopped ? "true" : "false");
	emit();
	if (e->stopped)
		kill(e->p.pid, SIGCONT);
}

static int on_event(void *ctx, void *data, size_t size)
{
	const struct eg_proc *p = data;

	switch (p->type) {
	case EG_TLS_WRITE: {
		const struct eg_tls_write *w = data;

		if (size < sizeof(*w) + w->cap)
			break;
		begin("ssl_write");
		put_proc(p);
		put(",\"fn\":\"%s\",\"ssl\":\"0x%llx\",\"fd\":%d", fn_name(w->fn),
		    (unsigned long long)w->ssl, w->fd);
		put_addr(&w->dst);
		put(",\"sni\":");
		if (w->sni[0])
			put_str(w->sni, sizeof(w->sni));
		else
			put("null");
		put(",\"len\":%llu,\"offset\":%llu,\"cap\":%u,\"data_b64\":", (unsigned long long)w->len,
		    (unsigned long long)w->offset, w->cap);
		put_b64((const __u8 *)(w + 1), w->cap);
		emit();
		break;
	}
	case EG_BIND: {
		const struct eg_bind *b = data;

		begin("bind");
		put_proc(p);
		put(",\"ssl\":\"0x%llx\",\"fd\":%d", (unsigned long long)b->ssl, b->fd);
		put_addr(&b->dst);
		put(",\"via\":\"%s\"", b->via == EG_VIA_SET_FD ? "SSL_set_fd" : "next_socket_write");
		emit();
		break;
	}
	case EG_SOCK_WRITE: {
		const struct eg_sock_write *w = data;

		if (size < sizeof(*w) + w->cap)
			break;
		begin("write");
		put_proc(p);
		put(",\"fd\":%d", w->fd);
		put_addr(&w->dst);
		put(",\"len\":%llu,\"data_b64\":", (unsigned long long)w->len);
		put_b64((const __u8 *)(w + 1), w->cap);
		emit();
		break;
	}
	case EG_CONNECT: {
		const struct eg_connect *c = data;

		begin("connect");
		put_proc(p);
		put(",\"fd\":%d", c->fd);
		put_addr(&c->dst);
		put(",\"proto\":\"%s\"", proto_name(c->dst.proto));
		emit();
		break;
	}
	case EG_EXEC:
		on_exec(data);
		break;
	case EG_KILL: {
		const struct eg_kill *k = data;

		begin("kill");
		put_proc(p);
		put(",\"signal\":9");
		if (k->reason == EG_KILL_MARKER) {
			put(",\"reason\":\"marker\",\"fn\":\"%s\"", fn_name(k->fn));
		} else {
			put(",\"reason\":\"smtp_connect\",\"syscall\":\"connect\"");
		}
		put_addr(&k->dst);
		if (k->reason == EG_KILL_MARKER && k->marker < nmarkers)
			put_key_str("marker", markers[k->marker]);
		emit();
		break;
	}
	}
	return 0;
}

static void print_stats(void)
{
	int ncpu = libbpf_num_possible_cpus();
	__u64 vals[ncpu], sum[EG_STAT_N] = {};

	for (__u32 k = 0; k < EG_STAT_N; k++) {
		if (bpf_map_lookup_elem(bpf_map__fd(mon->maps.stats), &k, vals))
			continue;
		for (int c = 0; c < ncpu; c++)
			sum[k] += vals[c];
	}
	begin("stats");
	put(",\"events\":%llu,\"drops\":%llu", (unsigned long long)sum[EG_STAT_EVENTS],
	    (unsigned long long)sum[EG_STAT_DROPS]);
	emit();
}

/* ---- monitor: settings that can change at run time ---- */

static int watch_cgroup(const char *path)
{
	struct cgroup cg;
	__u8 one = 1;

	if (resolve_cgroup(path, &cg))
		return -1;
	cgroups = realloc(cgroups, (ncgroups + 1) * sizeof(*cgroups));
	if (!cgroups)
		die(1, "out of memory");
	cgroups[ncgroups++] = cg;
	if (bpf_map_update_elem(bpf_map__fd(mon->maps.watched), &cg.id, &one, BPF_ANY))
		return -1;
	mon->data->cg_gen++;
	return 0;
}

static int add_relay(const struct eg_addr *a)
{
	__u8 one = 1;

	return bpf_map_update_elem(bpf_map__fd(mon->maps.relays), a, &one, BPF_ANY);
}

static int exclude_pid(int pid)
{
	__u32 key = pid;
	__u8 one = 1;

	excluded_pids = realloc(excluded_pids, (nexcluded + 1) * sizeof(*excluded_pids));
	if (!excluded_pids)
		die(1, "out of memory");
	excluded_pids[nexcluded++] = pid;
	return bpf_map_update_elem(bpf_map__fd(mon->maps.excluded), &key, &one, BPF_ANY);
}

static void on_command(const char *line)
{
	struct kv kv[KV_MAX];
	int n = parse_command(line, kv);
	const char *cmd = n > 0 ? kv_get(kv, n, "cmd") : NULL;
	const char *path, *addr, *port, *pid;
	struct eg_addr a;

	if (!cmd) {
		emit_error("bad command: %.200s", line);
	} else if (!strcmp(cmd, "watch_cgroup") && (path = kv_get(kv, n, "path"))) {
		if (watch_cgroup(path))
			emit_error("watch_cgroup %s: not a cgroup v2 directory", path);
		else
			scan_processes();
	} else if (!strcmp(cmd, "attach") && (path = kv_get(kv, n, "path"))) {
		consider(path, path, 0, true);
	} else if (!strcmp(cmd, "relay") && (addr = kv_get(kv, n, "addr")) && (port = kv_get(kv, n, "port"))) {
		if (parse_addr_port(addr, atol(port), &a) || add_relay(&a))
			emit_error("relay %s port %s: bad address", addr, port);
	} else if (!strcmp(cmd, "exclude_pid") && (pid = kv_get(kv, n, "pid"))) {
		if (atoi(pid) <= 0 || exclude_pid(atoi(pid)))
			emit_error("exclude_pid %s: bad pid", pid);
	} else {
		emit_error("unknown command: %.200s", line);
	}
}

/* ---- the event loop shared by `monitor` and `enforce --follow` ---- */

static void run(struct ring_buffer *rb, bool commands, bool ticks)
{
	struct pollfd fds[3] = {
		{ .fd = ring_buffer__epoll_fd(rb), .events = POLLIN },
		{ .fd = STDIN_FILENO, .events = POLLIN },
		{ .events = POLLIN },
	};
	char buf[65536];
	size_t have = 0;
	__u64 next_tick = now_ns() + TICK_NS;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	fds[2].fd = signalfd(-1, &set, SFD_CLOEXEC);

	for (;;) {
		poll(fds, 3, POLL_MS);
		ring_buffer__consume(rb);
		if (fds[2].revents)
			return;
		if (fds[1].revents) {
			ssize_t n = read(STDIN_FILENO, buf + have, sizeof(buf) - 1 - have);
			char *nl;

			if (n <= 0)
				return;
			have += n;
			buf[have] = 0;
			while ((nl = strchr(buf, '\n'))) {
				*nl = 0;
				if (commands && nl > buf)
					on_command(buf);
				have -= nl + 1 - buf;
				memmove(buf, nl + 1, have + 1);
			}
			if (have == sizeof(buf) - 1) {
				emit_error("command line too long");
				have = 0;
			}
		}
		if (ticks && now_ns() >= next_tick) {
			next_tick += TICK_NS;
			print_stats();
			scan_processes(); /* new files (dlopen, new containers) of running processes */
		}
	}
}

static void usage(void)
{
	fputs("usage:\n"
	      "  egressd monitor [--cgroup PATH]... [--kill] [--marker TEXT]... [--relay IP:PORT]...\n"
	      "                  [--exclude-pid PID]... [--chunk BYTES] [--max-chunks N]\n"
	      "  egressd enforce --cgroup PATH --pin DIR [--allow IP:PORT]... [--dns IP:PORT]... [--follow]\n"
	      "  egressd unenforce --pin DIR\n"
	      "  egressd check\n",
	      stderr);
	exit(1);
}

/* A verifier rejection is EACCES too, so privileges are judged from the capability itself. */
static bool has_sys_admin(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	unsigned long long caps = 0;
	char line[256];

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &caps) == 1)
			break;
	if (f)
		fclose(f);
	return caps >> 21 & 1; /* CAP_SYS_ADMIN */
}

static void need_btf(void)
{
	if (access("/sys/kernel/btf/vmlinux", R_OK))
		die(2, "kernel BTF (/sys/kernel/btf/vmlinux) is missing: CONFIG_DEBUG_INFO_BTF is needed");
}

static int load_monitor(void)
{
	int ncpu = libbpf_num_possible_cpus();

	mon = egress_mon_bpf__open();
	if (!mon)
		return -errno;
	bpf_map__set_max_entries(mon->maps.tls_scratch, ncpu);
	bpf_map__set_max_entries(mon->maps.sock_scratch, ncpu);
	return 0;
}

static int cmd_monitor(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cgroup", required_argument, 0, 'c' },   { "kill", no_argument, 0, 'k' },
		{ "marker", required_argument, 0, 'm' },   { "relay", required_argument, 0, 'r' },
		{ "exclude-pid", required_argument, 0, 'x' }, { "chunk", required_argument, 0, 'C' },
		{ "max-chunks", required_argument, 0, 'N' }, { 0 },
	};
	char **cg_args = calloc(argc, sizeof(char *));
	struct eg_addr *relays = calloc(argc, sizeof(*relays));
	int *pids = calloc(argc, sizeof(int));
	size_t ncg = 0, nrelays = 0, npids = 0;
	long chunk = EG_CHUNK_MAX, max_chunks = 64;
	bool kill_mode = false;
	struct ring_buffer *rb;
	struct bpf_link *exec_link;
	int c, err;

	markers = calloc(argc, sizeof(char *));
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cg_args[ncg++] = optarg; break;
		case 'k': kill_mode = true; break;
		case 'm':
			if (!*optarg || strlen(optarg) > EG_MARKER_LEN || nmarkers == EG_MARKERS)
				die(1, "--marker: 1..%d bytes, at most %d markers", EG_MARKER_LEN, EG_MARKERS);
			markers[nmarkers++] = optarg;
			break;
		case 'r':
			if (parse_endpoint(optarg, &relays[nrelays++]))
				die(1, "bad --relay %s (IP:PORT or [IPv6]:PORT)", optarg);
			break;
		case 'x': pids[npids++] = parse_num(optarg, 1, INT_MAX, "--exclude-pid"); break;
		case 'C': chunk = parse_num(optarg, 64, EG_CHUNK_MAX, "--chunk"); break;
		case 'N': max_chunks = parse_num(optarg, 1, 4096, "--max-chunks"); break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (kill_mode && !ncg)
		die(2, "--kill requires --cgroup (no box-wide kills)");
	if (!has_sys_admin())
		die(2, PRIV_MSG);
	need_btf();
	watch_all = !ncg;

	if (load_monitor())
		die(1, "open BPF object: %s", strerror(errno));
	mon->rodata->watch_all = watch_all;
	mon->rodata->kill_mode = kill_mode;
	mon->rodata->chunk_size = chunk;
	mon->rodata->max_chunks = max_chunks;
	mon->rodata->n_markers = nmarkers;
	for (size_t m = 0; m < nmarkers; m++) {
		mon->rodata->marker_len[m] = strlen(markers[m]);
		memcpy((char *)mon->rodata->markers[m], markers[m], strlen(markers[m]));
		mon->rodata->first_byte[(unsigned char)markers[m][0]] |= 1u << m;
	}
	err = egress_mon_bpf__load(mon);
	if (err == -EPERM)
		die(2, PRIV_MSG);
	if (err)
		die(1, "load BPF programs: %s", strerror(-err));

	for (size_t i = 0; i < ncg; i++)
		if (watch_cgroup(cg_args[i]))
			die(1, "--cgroup %s: not a cgroup v2 directory", cg_args[i]);
	for (size_t i = 0; i < nrelays; i++)
		if (add_relay(&relays[i]))
			die(1, "relay map: %s", strerror(errno));
	exclude_pid(getpid());
	for (size_t i = 0; i < npids; i++)
		exclude_pid(pids[i]);

	if (!bpf_program__attach(mon->progs.sys_enter))
		die(errno == EPERM || errno == EACCES ? 2 : 1, "attach tp_btf/sys_enter: %s", strerror(errno));
	/* before the scan, so that no process starts unseen between the two */
	exec_link = bpf_program__attach(mon->progs.sched_process_exec);
	if (!exec_link)
		die(1, "attach tp_btf/sched_process_exec: %s", strerror(errno));
	rb = ring_buffer__new(bpf_map__fd(mon->maps.events), on_event, NULL, NULL);
	if (!rb)
		die(1, "ring buffer: %s", strerror(errno));

	attach_libs("");
	scan_processes();
	begin("ready");
	put(",\"probes\":%d,\"version\":%d", probes, PROTOCOL_VERSION);
	emit();

	run(rb, true, true);

	/* No new stops, then continue whoever is still waiting for us. */
	bpf_link__destroy(exec_link);
	ring_buffer__consume(rb);
	ring_buffer__free(rb);
	egress_mon_bpf__destroy(mon);
	return 0;
}

/* ---- enforce ---- */

static const char *const enforce_links[] = { "connect4", "connect6", "sendmsg4", "sendmsg6" };

static int on_deny(void *ctx, void *data, size_t size)
{
	static const char *const hook_names[] = { "?", "connect4", "connect6", "sendmsg4", "sendmsg6" };
	const struct eg_deny *d = data;

	begin("deny");
	put_proc(&d->p);
	put(",\"hook\":\"%s\"", hook_names[d->hook <= EG_HOOK_SENDMSG6 ? d->hook : 0]);
	put_addr(&d->dst);
	put(",\"proto\":\"%s\"", proto_name(d->dst.proto));
	emit();
	return 0;
}

static void pin_path(char *out, const char *dir, const char *name)
{
	snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

static void unpin_all(const char *dir)
{
	static const char *const maps[] = { "allow", "denials" };
	char p[PATH_MAX];

	/* the allow map goes first: its pin is what marks a complete enforcement */
	for (size_t i = 0; i < 2; i++) {
		pin_path(p, dir, maps[i]);
		if (unlink(p) && errno != ENOENT)
			die(1, "unlink %s: %s", p, strerror(errno));
	}
	for (size_t i = 0; i < 4; i++) {
		pin_path(p, dir, enforce_links[i]);
		if (unlink(p) && errno != ENOENT)
			die(1, "unlink %s: %s", p, strerror(errno));
	}
}

/* Makes the map hold exactly keys[]: new keys first, so nothing allowed is ever missing. */
static void set_allow(int fd, const struct eg_addr *keys, size_t n)
{
	struct eg_addr k, next, *stale = NULL;
	size_t nstale = 0;
	__u8 one = 1;
	void *prev = NULL;

	for (size_t i = 0; i < n; i++)
		if (bpf_map_update_elem(fd, &keys[i], &one, BPF_ANY))
			die(1, "allow map: %s", strerror(errno));
	while (!bpf_map_get_next_key(fd, prev, &next)) {
		bool keep = false;

		for (size_t i = 0; i < n && !keep; i++)
			keep = !memcmp(&keys[i], &next, sizeof(next));
		if (!keep) {
			stale = realloc(stale, (nstale + 1) * sizeof(*stale));
			stale[nstale++] = next;
		}
		k = next;
		prev = &k;
	}
	for (size_t i = 0; i < nstale; i++)
		bpf_map_delete_elem(fd, &stale[i]);
	free(stale);
}

static int cmd_enforce(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cgroup", required_argument, 0, 'c' }, { "pin", required_argument, 0, 'p' },
		{ "allow", required_argument, 0, 'a' },  { "dns", required_argument, 0, 'd' },
		{ "follow", no_argument, 0, 'f' },       { 0 },
	};
	struct eg_addr *keys = calloc(2 * argc, sizeof(*keys));
	const char *cg_arg = NULL, *dir = NULL;
	struct egress_enforce_bpf *skel = NULL;
	struct bpf_link_info info = {};
	__u32 info_len = sizeof(info);
	struct ring_buffer *rb;
	char p[PATH_MAX];
	struct cgroup cg;
	bool follow = false;
	size_t nkeys = 0;
	int c, err, allow_fd, link_fd, deny_fd;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cg_arg = optarg; break;
		case 'p': dir = optarg; break;
		case 'a':
		case 'd':
			if (parse_endpoint(optarg, &keys[nkeys]))
				die(1, "bad --%s %s (IP:PORT or [IPv6]:PORT)", c == 'a' ? "allow" : "dns", optarg);
			keys[nkeys++].proto = IPPROTO_TCP;
			if (c == 'd') {
				keys[nkeys] = keys[nkeys - 1];
				keys[nkeys++].proto = IPPROTO_UDP;
			}
			break;
		case 'f': follow = true; break;
		default: usage();
		}
	}
	if (!cg_arg || !dir || optind != argc)
		usage();
	need_btf();
	if (resolve_cgroup(cg_arg, &cg))
		die(1, "--cgroup %s: not a cgroup v2 directory", cg_arg);
	ensure_bpffs();
	mkdir_p(dir);

	pin_path(p, dir, "allow");
	allow_fd = bpf_obj_get(p);
	if (allow_fd >= 0) {
		/* Already enforced (a monitor restart): swap the list in place, with no gap. */
		pin_path(p, dir, enforce_links[0]);
		link_fd = bpf_obj_get(p);
		if (link_fd < 0 || bpf_obj_get_info_by_fd(link_fd, &info, &info_len))
			die(1, "%s: incomplete pins; run unenforce first", dir);
		if (info.cgroup.cgroup_id != cg.id)
			die(1, "%s already enforces another cgroup; run unenforce first", dir);
		set_allow(allow_fd, keys, nkeys);
		pin_path(p, dir, "denials");
		deny_fd = bpf_obj_get(p);
	} else {
		int cg_fd = open(cg.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct bpf_program *progs[4];

		skel = egress_enforce_bpf__open_and_load();
		if (!skel)
			die(errno == EPERM ? 2 : 1, "load cgroup programs: %s%s", strerror(errno),
			    errno == EPERM ? " (needs CAP_SYS_ADMIN, or CAP_BPF and CAP_NET_ADMIN)" : "");
		progs[0] = skel->progs.connect4;
		progs[1] = skel->progs.connect6;
		progs[2] = skel->progs.sendmsg4;
		progs[3] = skel->progs.sendmsg6;
		set_allow(bpf_map__fd(skel->maps.allow), keys, nkeys);
		for (int i = 0; i < 4; i++) {
			struct bpf_link *link = bpf_program__attach_cgroup(progs[i], cg_fd);

			pin_path(p, dir, enforce_links[i]);
			err = link ? bpf_link__pin(link, p) : -errno;
			if (err) {
				unpin_all(dir);
				die(err == -EPERM ? 2 : 1, "attach/pin %s: %s", enforce_links[i], strerror(-err));
			}
		}
		pin_path(p, dir, "denials");
		err = bpf_map__pin(skel->maps.denials, p);
		pin_path(p, dir, "allow");
		if (err || (err = bpf_map__pin(skel->maps.allow, p))) {
			unpin_all(dir);
			die(1, "pin maps under %s: %s", dir, strerror(-err));
		}
		close(cg_fd);
		deny_fd = bpf_map__fd(skel->maps.denials);
	}
	if (follow) {
		rb = ring_buffer__new(deny_fd, on_deny, NULL, NULL);
		if (!rb)
			die(1, "deny ring buffer: %s", strerror(errno));
		run(rb, false, false);
		ring_buffer__free(rb);
	}
	egress_enforce_bpf__destroy(skel); /* the pins keep the links */
	return 0;
}

static int cmd_unenforce(int argc, char **argv)
{
	static const struct option opts[] = { { "pin", required_argument, 0, 'p' }, { 0 } };
	const char *dir = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != 'p')
			usage();
		dir = optarg;
	}
	if (!dir || optind != argc)
		usage();
	unpin_all(dir);
	if (rmdir(dir) && errno != ENOENT)
		die(1, "rmdir %s: %s", dir, strerror(errno));
	return 0;
}

/* Loads the monitor and hooks our own main(): the same privileges a real run needs. */
static int cmd_check(void)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = "main");
	bool btf = !access("/sys/kernel/btf/vmlinux", R_OK);
	char cg[PATH_MAX], error[256] = "";
	struct statfs sf;
	bool bpffs = !statfs("/sys/fs/bpf", &sf) && sf.f_type == BPF_FS_MAGIC;
	bool have_cg = cgroup2_mount(cg, sizeof(cg));
	struct bpf_link *link;
	int err;

	if (!has_sys_admin())
		snprintf(error, sizeof(error), PRIV_MSG);
	else if (!btf)
		snprintf(error, sizeof(error), "kernel BTF (/sys/kernel/btf/vmlinux) is missing");
	else if ((err = load_monitor()) || (err = egress_mon_bpf__load(mon)))
		snprintf(error, sizeof(error), "load: %s", err == -EPERM ? PRIV_MSG : strerror(-err));
	else if (!(link = bpf_program__attach_uprobe_opts(mon->progs.tls_pending, getpid(), "/proc/self/exe", 0, &opts)))
		snprintf(error, sizeof(error), "%s", errno == EPERM || errno == EACCES ? PRIV_MSG : strerror(errno));
	else
		bpf_link__destroy(link);
	egress_mon_bpf__destroy(mon);

	begin("check");
	put(",\"ok\":%s,\"root\":%s,\"btf\":%s,\"bpffs\":%s,\"cgroup2\":", error[0] ? "false" : "true",
	    geteuid() ? "false" : "true", btf ? "true" : "false", bpffs ? "true" : "false");
	if (have_cg)
		put_str(cg, SIZE_MAX);
	else
		put("null");
	put(",\"version\":%d", PROTOCOL_VERSION);
	if (error[0])
		put_key_str("error", error);
	emit();
	return error[0] ? 2 : 0;
}

int main(int argc, char **argv)
{
	libbpf_set_print(libbpf_log);
	elf_version(EV_CURRENT);
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "monitor"))
		return cmd_monitor(argc - 1, argv + 1);
	if (!strcmp(argv[1], "enforce"))
		return cmd_enforce(argc - 1, argv + 1);
	if (!strcmp(argv[1], "unenforce"))
		return cmd_unenforce(argc - 1, argv + 1);
	if (!strcmp(argv[1], "check"))
		return cmd_check();
	usage();
}
