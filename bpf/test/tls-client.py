# python ssl client (libssl SSL_write_ex): the SMTP lines in one write. Usage: tls-client.py PORT
import socket, ssl, sys

c = ssl.create_default_context()
c.check_hostname = False
c.verify_mode = ssl.CERT_NONE
s = c.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))), server_hostname='smtp.example.test')
s.sendall(b'EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<phan@giftshop.club>\r\n')
s.close()
