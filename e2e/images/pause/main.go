// The pod sandbox ("pause") image of the local real node: it holds the pod's namespaces and
// does nothing else until the kubelet stops it. Built from this file; nothing is pulled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	// As PID 1 of the pod, reap any orphan that the shared PID namespace hands us.
	go func() {
		children := make(chan os.Signal, 1)
		signal.Notify(children, syscall.SIGCHLD)
		for range children {
			for {
				if pid, _ := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); pid <= 0 {
					break
				}
			}
		}
	}()
	<-stop
}
