// Go crypto/tls client for e2e.sh (built only where a Go toolchain exists). Usage: go-client PORT
package main

import (
	"crypto/tls"
	"os"
)

func main() {
	c, err := tls.Dial("tcp", "127.0.0.1:"+os.Args[1], &tls.Config{InsecureSkipVerify: true, ServerName: "smtp.example.test"})
	if err != nil {
		panic(err)
	}
	c.Write([]byte("EHLO go\r\n"))
	c.Write([]byte("RCPT TO:<phan@giftshop.club>\r\n"))
	c.Close()
}
