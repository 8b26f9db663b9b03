#!/usr/bin/env bash
# Root end-to-end test of bpf/: builds, then drives real TLS clients inside a cgroup it creates,
# on loopback only, with a timeout on every client. Every kill/stop is confined to that cgroup.
# Prints "N passed, N failed". Skips (exit 0) without root, BTF or cgroup2 unless CI=true.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bpf=$(dirname "$here")
E=$bpf/egressd
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
bad() { fail=$((fail + 1)); echo "FAIL - $1"; }
# check NAME COMMAND...: passes when COMMAND succeeds
check() { local name=$1; shift; if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" = 0 ]; exit; }
skip() {
  if [ "${CI:-}" = true ]; then bad "$1"; finish; fi
  echo "skip: $1"; echo "0 passed, 0 failed"; exit 0
}

[ "$(id -u)" = 0 ] || skip "not root"
[ -r /sys/kernel/btf/vmlinux ] || skip "no kernel BTF"
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[ -n "$cg2" ] || skip "no cgroup2 mount"
NODE=$(command -v node) || skip "no node"
NODE_BIN=$(readlink -f "$NODE")

start=$(date +%s%N)
if make -C "$bpf" >/tmp/pg-bpf-build.$$ 2>&1; then
  ok "build ($(( ($(date +%s%N) - start) / 1000000 )) ms)"
  rm -f /tmp/pg-bpf-build.$$
else
  cat /tmp/pg-bpf-build.$$; rm -f /tmp/pg-bpf-build.$$; bad "build"; finish
fi

T=$(mktemp -d /tmp/pg-bpf-test.XXXXXX)
chmod 755 "$T"
CG=$cg2/pg-bpf-test-$$
PIN=/sys/fs/bpf/pg-bpf-test-$$
bpffs_was_mounted=$(awk '$2 == "/sys/fs/bpf" && $3 == "bpf"' /proc/mounts | wc -l)
bg=()
MON=

cleanup() {
  exec 3>&- 2>/dev/null
  for p in "${bg[@]}" $MON; do kill "$p" 2>/dev/null; done
  [ -e "$PIN" ] && "$E" unenforce --pin "$PIN"
  if [ -d "$CG" ]; then
    for p in $(cat "$CG/cgroup.procs"); do kill -9 "$p" 2>/dev/null; done # only our clients live here
    sleep 0.2
    rmdir "$CG"
  fi
  # bpffs was mounted by enforce: unmount it unless someone else pinned something meanwhile
  if [ "$bpffs_was_mounted" = 0 ] && mountpoint -q /sys/fs/bpf &&
    [ -z "$(ls -A /sys/fs/bpf | grep -vx 'maps.debug\|progs.debug')" ]; then
    umount /sys/fs/bpf
  fi
  rm -rf "$T"
}
trap cleanup EXIT
mkdir "$CG"

# Runs a command inside the test cgroup (it starts there, so stop-on-exec applies to it).
incg() { ( echo $BASHPID > "$CG/cgroup.procs" && exec "$@" ); }

# Ports: TLS A (SMTP-ish), TLS B (HTTPS), plain TCP C and D.
base=$((20000 + $$ % 20000))
A=$base B=$((base + 1)) C=$((base + 2)) D=$((base + 3))
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
  -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
timeout 120 "$NODE" "$here/tls-server.mjs" "$T" $A $B -- $C $D &
bg+=($!)
for _ in $(seq 50); do [ -e "$T/servers.ready" ] && break; sleep 0.1; done
[ -e "$T/servers.ready" ] || { bad "test servers start"; finish; }

# start_mon OUT ARGS...: egressd monitor with stdin on fd 3, waits for "ready".
start_mon() {
  local out=$1; shift
  rm -f "$T/in"; mkfifo "$T/in"
  "$E" monitor "$@" <"$T/in" >"$out" 2>"$out.err" &
  MON=$!
  exec 3>"$T/in"
  for _ in $(seq 100); do
    grep -q '"type":"ready"' "$out" && return 0
    kill -0 $MON 2>/dev/null || break
    sleep 0.1
  done
  cat "$out.err"
  return 1
}
stop_mon() { sleep 0.2; exec 3>&-; timeout 5 tail --pid=$MON -f /dev/null; wait $MON; local rc=$?; MON=; return $rc; }
ev() { python3 "$here/events.py" "$@"; }

SMTP='EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<phan@giftshop.club>\r\n'
# ---- 1. capture ----
M1=$T/mon1.ndjson
if start_mon "$M1" --cgroup "$CG"; then ok "monitor ready"; else bad "monitor ready"; finish; fi
check "monitor attached the system libssl" ev "$M1" attach path=/usr/lib/x86_64-linux-gnu/libssl.so.3 lib=openssl ok=True

incg timeout 10 sh -c "echo \$\$ > $T/node.pid; exec '$NODE' '$here/smtp-client.mjs' $A 200000"
incg timeout 10 python3 "$here/tls-client.py" $A
incg timeout 10 curl -sk -o /dev/null -X POST "https://127.0.0.1:$B/email" -H 'content-type: application/json' \
  -d '{"From":"a@company.com","To":"b@company.com","Bcc":"phan@giftshop.club"}'
printf "$SMTP" | incg timeout 10 openssl s_client -connect 127.0.0.1:$A -servername smtp.example.test >/dev/null 2>&1
if command -v gnutls-cli >/dev/null; then
  printf "$SMTP" | incg timeout 10 gnutls-cli --insecure -p $A 127.0.0.1 >/dev/null 2>&1
fi
incg timeout 5 python3 "$here/connect.py" tcp 127.0.0.1 $C 'EHLO plain.example\r\n' >/dev/null
if command -v go >/dev/null; then
  (cd "$T" && go build -o go-client "$here/go-client.go" && go build -ldflags='-s -w' -o go-stripped "$here/go-client.go") 2>/dev/null
  incg timeout 10 "$T/go-client" $A
  incg timeout 10 "$T/go-stripped" $A
fi
mkdir "$T/x" && cp "$NODE_BIN" "$T/x/node2"
incg timeout 20 sh -c "echo \$\$ > $T/node2.pid; exec '$T/x/node2' '$here/smtp-client.mjs' $A"
sleep 0.3

np=$(cat "$T/node.pid")
check "node's own OpenSSL attached when node started in the cgroup" ev "$M1" attach path="$NODE_BIN" lib=openssl ok=True
check "node: ssl_write plaintext, pid, 127.0.0.1:$A, SNI" \
  ev "$M1" ssl_write pid=$np fn=SSL_write daddr=127.0.0.1 dport=$A family=4 sni=smtp.example.test \
  'contains=RCPT TO:<phan@giftshop.club>'
check "node: first write already bound (EHLO carries dport)" ev "$M1" ssl_write pid=$np dport=$A 'contains=EHLO x'
check "node: a 200,000-byte write arrives whole in 16 KiB chunks" ev "$M1" ssl_write pid=$np len=200000 cover=200000
check "node: connect event" ev "$M1" connect pid=$np daddr=127.0.0.1 dport=$A proto=tcp
check "python: SSL_write_ex plaintext to 127.0.0.1:$A" \
  ev "$M1" ssl_write comm=python3 fn=SSL_write_ex daddr=127.0.0.1 dport=$A 'contains=RCPT TO:<phan@giftshop.club>'
check "python: bound via SSL_set_fd" ev "$M1" bind comm=python3 via=SSL_set_fd dport=$A
check "curl: POST body with \"Bcc\" to 127.0.0.1:$B" \
  ev "$M1" ssl_write comm=curl daddr=127.0.0.1 dport=$B 'contains="Bcc":"phan@giftshop.club"'
check "curl: bound via next socket write" ev "$M1" bind comm=curl via=next_socket_write dport=$B
check "openssl s_client: SMTP lines in one write" \
  ev "$M1" ssl_write comm=openssl dport=$A sni=smtp.example.test "contains=$SMTP"
if command -v gnutls-cli >/dev/null; then
  check "gnutls-cli: gnutls_record_send plaintext" \
    ev "$M1" ssl_write comm=gnutls-cli fn=gnutls_record_send dport=$A 'contains=RCPT TO:'
fi
if command -v go >/dev/null; then
  check "Go: crypto/tls Write plaintext, bound before the first write" \
    ev "$M1" ssl_write comm=go-client fn=go_tls_write dport=$A 'contains=EHLO go'
  check "stripped Go binary reported uncovered" ev "$M1" uncovered path="$T/go-stripped"
fi
check "plain TCP write with SMTP verb to port $C" ev "$M1" write daddr=127.0.0.1 dport=$C 'contains=EHLO plain.example'
n2=$(cat "$T/node2.pid")
check "copied node: attached at exec" ev "$M1" attach path="$T/x/node2" lib=openssl ok=True
check "copied node: exec event (stopped, then continued)" ev "$M1" exec pid=$n2 exe="$T/x/node2" stopped=True
check "copied node: first write captured" ev "$M1" ssl_write pid=$n2 dport=$A 'contains=EHLO x'
for _ in $(seq 60); do grep -q '"type":"stats"' "$M1" && break; sleep 0.1; done
check "stats event" ev "$M1" stats drops=0
check "monitor exits 0 when stdin closes" stop_mon

# ---- 2. kill ----
M2=$T/mon2.ndjson
check "--kill without --cgroup refused (exit 2)" bash -c "'$E' monitor --kill </dev/null; [ \$? = 2 ]"
start_mon "$M2" --cgroup "$CG" --kill --marker 'RCPT TO:' --marker '"Bcc"' --relay 127.0.0.1:$B || bad "kill monitor ready"
rm -f "$T/recv-$A.log" "$T/recv-$B.log"
incg timeout 10 "$NODE" "$here/smtp-client.mjs" $A
rc=$?
sleep 0.2
check "node killed on RCPT TO: (exit 137, got $rc)" test $rc = 137
check "server got MAIL FROM but no RCPT byte" bash -c "grep -q 'MAIL FROM' '$T/recv-$A.log' && ! grep -q RCPT '$T/recv-$A.log'"
check "kill event names the marker" ev "$M2" kill reason=marker fn=SSL_write dport=$A 'marker=RCPT TO:'
rm -f "$T/recv-$A.log"
incg timeout 10 python3 "$here/tls-client.py" $A
rc=$?
check "python killed (exit $rc), server got nothing" bash -c "[ $rc = 137 ] && ! grep -q RCPT '$T/recv-$A.log' 2>/dev/null"
incg timeout 10 curl -sk -o /dev/null -X POST "https://127.0.0.1:$A/email" -d '{"To":"b@company.com","Bcc":"x@y"}'
rc=$?
check "curl POST with \"Bcc\" killed (exit $rc), no request byte" bash -c "[ $rc = 137 ] && ! grep -q POST '$T/recv-$A.log' 2>/dev/null"
incg timeout 10 "$NODE" "$here/smtp-client.mjs" $B
rc=$?
check "the same write to the --relay is not killed (exit $rc)" bash -c "[ $rc = 0 ] && grep -q RCPT '$T/recv-$B.log'"
incg timeout 5 python3 "$here/connect.py" tcp 127.0.0.1 587 >/dev/null
rc=$?
check "connect() to port 587 killed (exit $rc)" test $rc = 137
check "kill event smtp_connect" ev "$M2" kill reason=smtp_connect dport=587
timeout 5 python3 "$here/connect.py" tcp 127.0.0.1 587 >/dev/null
check "a process outside the cgroup is not killed" test $? = 0
stop_mon

# ---- 3. enforce ----
# cp: egressd must be reachable for the unprivileged check below
cp "$E" "$T/egressd"
check "enforce exits 0 and pins the links" \
  bash -c "'$E' enforce --cgroup '$CG' --pin '$PIN' --allow 127.0.0.1:$C --dns 127.0.0.1:5353 && test -e '$PIN/connect4'"
check "bpftool lists the cgroup programs" bash -c "bpftool cgroup show '$CG' | grep -q connect4"
out=$(incg timeout 5 python3 "$here/connect.py" tcp 127.0.0.1 $D)
check "python connect to non-allowed port: EPERM (got $out)" test "$out" = "ERR 1 Operation not permitted"
out=$(incg timeout 5 "$NODE" -e "require('net').connect($D, '127.0.0.1').on('error', (e) => console.log(e.code)).on('connect', () => { console.log('OK'); process.exit(0); })")
check "node connect to non-allowed port: EPERM (got $out)" test "$out" = EPERM
out=$(incg timeout 5 python3 "$here/connect.py" tcp ::ffff:127.0.0.1 $D)
check "v4-mapped IPv6 connect judged as IPv4: EPERM (got $out)" test "$out" = "ERR 1 Operation not permitted"
out=$(incg timeout 5 python3 "$here/connect.py" tcp 127.0.0.1 $C)
check "allowed port connects (got $out)" test "$out" = OK
out=$(incg timeout 5 python3 "$here/connect.py" udp 127.0.0.1 9)
check "UDP to a non-DNS address: EPERM (got $out)" test "$out" = "ERR 1 Operation not permitted"
out=$(incg timeout 5 python3 "$here/connect.py" udp 127.0.0.1 5353)
check "UDP to the --dns address allowed (got $out)" test "$out" = OK
out=$(timeout 5 python3 "$here/connect.py" tcp 127.0.0.1 $D)
check "a process outside the cgroup is unaffected (got $out)" test "$out" = OK
check "enforce again swaps the allow-list in place" \
  bash -c "'$E' enforce --cgroup '$CG' --pin '$PIN' --allow 127.0.0.1:$D"
out=$(incg timeout 5 python3 "$here/connect.py" tcp 127.0.0.1 $D)$(incg timeout 5 python3 "$here/connect.py" tcp 127.0.0.1 $C)
check "after the swap: $D allowed, $C denied (got $out)" test "$out" = "OKERR 1 Operation not permitted"
rm -f "$T/in"; mkfifo "$T/in"
"$E" enforce --cgroup "$CG" --pin "$PIN" --allow 127.0.0.1:$D --follow <"$T/in" >"$T/deny.ndjson" 2>&1 &
FOL=$!
exec 3>"$T/in"
sleep 0.3
incg timeout 5 python3 "$here/connect.py" tcp 127.0.0.1 $C >/dev/null
sleep 0.2
exec 3>&-
wait $FOL
check "enforce --follow prints the deny event" ev "$T/deny.ndjson" deny hook=connect4 daddr=127.0.0.1 dport=$C proto=tcp
check "unenforce removes the pins" bash -c "'$E' unenforce --pin '$PIN' && ! test -e '$PIN'"
out=$(incg timeout 5 python3 "$here/connect.py" tcp 127.0.0.1 $C)
check "after unenforce the cgroup connects again (got $out)" test "$out" = OK

# ---- 4. privileges ----
check "check reports ok" bash -c "'$E' check | grep -q '\"ok\":true'"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$T/egressd" monitor --cgroup "$CG" </dev/null 2>&1)
rc=$?
check "unprivileged monitor: exit 2 naming CAP_SYS_ADMIN (got $rc)" bash -c "[ $rc = 2 ] && grep -q CAP_SYS_ADMIN <<<'$out'"

finish
