// A TCP reachability probe for the real-node e2e's NetworkPolicy checks:
//
//	probe HOST:PORT [SECONDS]
//
// tries to open a TCP connection for up to SECONDS (default 3), again every quarter second:
// prints "reached" and exits 0 at the first that opens, else prints the last error and exits
// 1. It keeps trying because a policy controller admits a new pod (this one) only once it has
// seen it start. Built from this file; nothing is pulled.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe HOST:PORT [SECONDS]")
		os.Exit(2)
	}
	seconds := 3
	if len(os.Args) > 2 {
		if s, err := strconv.Atoi(os.Args[2]); err == nil && s > 0 {
			seconds = s
		}
	}
	start := time.Now()
	deadline := start.Add(time.Duration(seconds) * time.Second)
	var err error
	for time.Now().Before(deadline) {
		var conn net.Conn
		if conn, err = net.DialTimeout("tcp", os.Args[1], time.Second); err == nil {
			conn.Close()
			fmt.Printf("reached %s after %.1f s\n", os.Args[1], time.Since(start).Seconds())
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	fmt.Printf("unreachable %s for %d s: %v\n", os.Args[1], seconds, err)
	os.Exit(1)
}
