// A TCP reachability probe for the real-node e2e's NetworkPolicy checks:
//
//	probe HOST:PORT [SECONDS]
//
// prints "reached" and exits 0 when a TCP connection opens within SECONDS (default 3), else
// prints why and exits 1. Built from this file; nothing is pulled.
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
	conn, err := net.DialTimeout("tcp", os.Args[1], time.Duration(seconds)*time.Second)
	if err != nil {
		fmt.Printf("unreachable %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	conn.Close()
	fmt.Printf("reached %s\n", os.Args[1])
}
