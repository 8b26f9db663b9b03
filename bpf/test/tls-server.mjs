// Loopback servers for e2e.sh: TLS (records plaintext) and plain TCP, one file per port.
// Answers HTTP requests so curl finishes. Usage: node tls-server.mjs DIR TLS_PORT... -- TCP_PORT...
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

const [dir, ...rest] = process.argv.slice(2);
const split = rest.indexOf('--');
const tlsPorts = split < 0 ? rest : rest.slice(0, split);
const tcpPorts = split < 0 ? [] : rest.slice(split + 1);
const opts = { key: readFileSync(`${dir}/key.pem`), cert: readFileSync(`${dir}/cert.pem`) };

function serve(port) {
  return (sock) => {
    let seen = '';
    sock.on('data', (d) => {
      appendFileSync(`${dir}/recv-${port}.log`, d);
      seen += d.toString('latin1');
      if (seen.startsWith('POST ') && seen.includes('\r\n\r\n')) {
        sock.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');
      }
    });
    sock.on('error', () => {});
  };
}
const listening = [
  ...tlsPorts.map((p) => new Promise((r) => tls.createServer(opts, serve(p)).listen(+p, '127.0.0.1', r))),
  ...tcpPorts.map((p) => new Promise((r) => net.createServer(serve(p)).listen(+p, '127.0.0.1', r))),
];
await Promise.all(listening);
writeFileSync(`${dir}/servers.ready`, 'ok');
