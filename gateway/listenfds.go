package gateway

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// The names of the sockets the gateway takes from systemd, as the socket
// units' FileDescriptorName= set them (docker/locky-gateway.socket and
// docker/locky-gateway-http.socket).
const (
	socketMQTT = "mqtt"
	socketHTTP = "http"
)

// listenFDsStart is the first file descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// systemdListener returns the listening socket systemd passed the gateway
// under name (socket activation, sd_listen_fds(3): LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES), or nil if there is none by that name: the gateway then
// binds its configured address as without systemd.
//
// The state of the activation is the environment, as systemd leaves it: a
// socket taken is struck from LISTEN_FDNAMES, so that a second gateway in the
// same process binds its own address, and once no socket the gateway takes is
// left the three variables are unset, so that no child inherits them. Every
// passed descriptor is marked close-on-exec (systemd passes them without).
// The listener is a duplicate: closing it leaves systemd's copy listening,
// so that connections during a restart wait in the kernel's backlog.
func systemdListener(name string) (net.Listener, error) {
	pid, ok := os.LookupEnv("LISTEN_PID")
	if !ok {
		return nil, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil // meant for another process (our parent's, say)
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 0 {
		return nil, fmt.Errorf("LISTEN_FDS=%q is not a number of sockets; start the gateway from its socket units or without the LISTEN_* variables", os.Getenv("LISTEN_FDS"))
	}
	names := make([]string, n)
	if v, ok := os.LookupEnv("LISTEN_FDNAMES"); ok && (n > 0 || v != "") {
		names = strings.Split(v, ":")
		if len(names) != n {
			return nil, fmt.Errorf("LISTEN_FDNAMES=%q names %d sockets but LISTEN_FDS=%d; start the gateway from its socket units or without the LISTEN_* variables", v, len(names), n)
		}
	}
	for fd := listenFDsStart; fd < listenFDsStart+n; fd++ {
		syscall.CloseOnExec(fd)
	}
	var ln net.Listener
	if i := slices.Index(names, name); i >= 0 {
		fd := listenFDsStart + i
		f := os.NewFile(uintptr(fd), "systemd:"+name)
		ln, err = net.FileListener(f) // a duplicate, close-on-exec
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("the socket systemd passed as %q (fd %d) is no listening socket; check FileDescriptorName= in the socket units: %w", name, fd, err)
		}
		names[i] = ""
	}
	if slices.ContainsFunc(names, func(s string) bool { return s == socketMQTT || s == socketHTTP }) {
		os.Setenv("LISTEN_FDNAMES", strings.Join(names, ":"))
	} else {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}
	return ln, nil
}

// logInherited says that the gateway serves on the socket from (systemd, or
// the previous binary of an upgrade) passed instead of binding flag's
// address, and warns if that address is not the socket's: the socket unit
// and the config disagree.
func logInherited(log *slog.Logger, name, from, flag, configured string, ln net.Listener) {
	addr := ln.Addr().String()
	if sameTCPAddr(configured, ln.Addr()) {
		log.Info("listening on the socket "+from+" passed", "socket", name, "addr", addr)
		return
	}
	fix := "make the socket unit's ListenStream= and " + flag + " agree"
	if from != "systemd" {
		fix = "restart the gateway to bind " + flag + " if it changed"
	}
	log.Warn("the socket "+from+" passed is not at the configured address; listening on the socket ("+fix+")",
		"socket", name, "addr", addr, flag, configured)
}

// sameTCPAddr reports whether the address configured is addr's: the same
// port and IP, any unspecified IP (0.0.0.0, ::, none) matching any other.
func sameTCPAddr(configured string, addr net.Addr) bool {
	got, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	want, err := net.ResolveTCPAddr("tcp", configured)
	if err != nil || want.Port != got.Port {
		return false
	}
	unspecified := func(ip net.IP) bool { return ip == nil || ip.IsUnspecified() }
	return want.IP.Equal(got.IP) || unspecified(want.IP) && unspecified(got.IP)
}
