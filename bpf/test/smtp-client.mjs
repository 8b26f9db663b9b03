// SMTP lines over TLS, one SSL_write per line, 150 ms apart. Usage: node smtp-client.mjs PORT [BIG]
// With BIG, then one write of BIG bytes (node passes it whole to SSL_write).
import tls from 'node:tls';

const lines = ['EHLO x\r\n', 'MAIL FROM:<a@b>\r\n', 'RCPT TO:<phan@giftshop.club>\r\n'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sock = tls.connect({ host: '127.0.0.1', port: +process.argv[2], servername: 'smtp.example.test', rejectUnauthorized: false });
sock.on('error', (e) => { console.error(e.message); process.exit(3); });
sock.on('secureConnect', async () => {
  for (const l of lines) {
    sock.write(l);
    await sleep(150);
  }
  if (process.argv[3]) sock.write(Buffer.alloc(+process.argv[3], 'z'));
  sock.end();
});
