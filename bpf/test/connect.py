# connect() probe for e2e.sh. Usage: connect.py tcp|udp HOST PORT [DATA]; prints OK or ERR <errno> <text>.
import socket, sys

kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = sys.argv[4].encode().decode('unicode_escape').encode() if len(sys.argv) > 4 else b''
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if kind == 'tcp' else socket.SOCK_DGRAM)
try:
    if kind == 'udp':
        s.sendto(data or b'x', (host, port))
    else:
        s.settimeout(3)
        s.connect((host, port))
        if data:
            s.sendall(data)
    print('OK')
except OSError as e:
    print('ERR', e.errno, e.strerror)
