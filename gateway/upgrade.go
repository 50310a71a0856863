package gateway

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// An in-place upgrade without systemd (SIGUSR2, see cmd/locky-gateway): the
// running gateway stops gracefully but keeps duplicates of its two listening
// sockets open, then replaces itself with the new binary (execve, same PID),
// which finds them through these variables. Connections made meanwhile wait
// in the kernel's backlog, and only one process ever has the database open.
const (
	envUpgradeFDs = "LOCKY_UPGRADE_FDS" // name=fd,name=fd: the sockets passed
	envUpgradePID = "LOCKY_UPGRADE_PID" // the process they are meant for
	// EnvUpgradeFailed tells the binary restarted after a failed exec of
	// the new one why that failed, for GET /status.
	EnvUpgradeFailed = "LOCKY_UPGRADE_FAILED"
)

// HandOver returns duplicates of the gateway's listening sockets, by socket
// name ("mqtt", "http"), for UpgradeEnv. Call it while the gateway runs:
// the duplicates keep the sockets listening after Run has closed its own.
func (g *Gateway) HandOver() (map[string]*os.File, error) {
	if g.mqttLn == nil || g.httpRaw == nil {
		return nil, errors.New("the gateway has no listening sockets yet; nothing to hand over")
	}
	files := map[string]*os.File{}
	for name, ln := range map[string]net.Listener{socketMQTT: g.mqttLn, socketHTTP: g.httpRaw} {
		tl, ok := ln.(*net.TCPListener)
		if !ok {
			closeFiles(files)
			return nil, fmt.Errorf("the %s listener is no TCP socket (%T); it cannot be handed over: restart the gateway instead", name, ln)
		}
		f, err := tl.File()
		if err != nil {
			closeFiles(files)
			return nil, fmt.Errorf("cannot duplicate the %s socket for the new binary: %w", name, err)
		}
		files[name] = f
	}
	return files, nil
}

func closeFiles(files map[string]*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// UpgradeEnv returns env for the new binary of this process (same PID,
// execve) with the sockets of files in it, and makes the descriptors
// survive the exec.
func UpgradeEnv(env []string, files map[string]*os.File) ([]string, error) {
	var fds []string
	for _, name := range []string{socketMQTT, socketHTTP} {
		f := files[name]
		if f == nil {
			return nil, fmt.Errorf("no %s socket to hand over", name)
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), syscall.F_SETFD, 0); errno != 0 {
			return nil, fmt.Errorf("cannot keep the %s socket open across the exec: %w", name, errno)
		}
		fds = append(fds, fmt.Sprintf("%s=%d", name, f.Fd()))
	}
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, envUpgradeFDs+"=") || strings.HasPrefix(kv, envUpgradePID+"=")
	})
	return append(env, envUpgradeFDs+"="+strings.Join(fds, ","), envUpgradePID+"="+strconv.Itoa(os.Getpid())), nil
}

// upgradeListener returns the socket the previous binary of this process
// handed over under name, or nil if there is none. As with systemd's, a
// socket taken is struck from the variable, the variables are unset once
// none is left, and every passed descriptor is marked close-on-exec.
func upgradeListener(name string) (net.Listener, error) {
	pid, ok := os.LookupEnv(envUpgradePID)
	if !ok {
		return nil, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil // meant for another process
	}
	var ln net.Listener
	var left []string
	for _, item := range strings.Split(os.Getenv(envUpgradeFDs), ",") {
		n, v, ok := strings.Cut(item, "=")
		fd, err := strconv.Atoi(v)
		if !ok || err != nil || fd < 3 {
			return nil, fmt.Errorf("%s=%q is not name=fd,…; start the gateway without it", envUpgradeFDs, os.Getenv(envUpgradeFDs))
		}
		syscall.CloseOnExec(fd)
		if n != name || ln != nil {
			left = append(left, item)
			continue
		}
		f := os.NewFile(uintptr(fd), "upgrade:"+name)
		ln, err = net.FileListener(f) // a duplicate, close-on-exec
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("the %s socket the previous binary passed (fd %d) is no listening socket: %w", name, fd, err)
		}
	}
	if len(left) > 0 {
		os.Setenv(envUpgradeFDs, strings.Join(left, ","))
	} else {
		os.Unsetenv(envUpgradeFDs)
		os.Unsetenv(envUpgradePID)
	}
	return ln, nil
}

// inheritedListener is the socket systemd passed as name, else the one the
// previous binary handed over, else nil (the gateway binds its address);
// from says which.
func inheritedListener(name string) (ln net.Listener, from string, err error) {
	if ln, err = systemdListener(name); ln != nil || err != nil {
		return ln, "systemd", err
	}
	ln, err = upgradeListener(name)
	return ln, "the previous binary", err
}

// Status is the body of GET /status: which process and build serve, since
// when, and the last upgrade this process refused. `locky-gateway upgrade`
// reads it to tell a swap done (a new start under the same PID) from one
// refused.
type Status struct {
	PID       int       `json:"pid"`
	Version   string    `json:"version"`
	Commit    string    `json:"commit"`
	StartedAt time.Time `json:"started_at"`
	Ready     bool      `json:"ready"`
	// UpgradeRefused is why the last upgrade asked of this process did not
	// happen (the new binary failed its checks); empty if none was refused.
	UpgradeRefused   string     `json:"upgrade_refused,omitempty"`
	UpgradeRefusedAt *time.Time `json:"upgrade_refused_at,omitempty"`
}

// status is the current Status.
func (g *Gateway) status() Status {
	version, commit := Build()
	st := Status{PID: os.Getpid(), Version: version, Commit: commit, StartedAt: g.started.UTC(), Ready: g.Ready()}
	if r := g.refused.Load(); r != nil {
		st.UpgradeRefused, st.UpgradeRefusedAt = r.reason, &r.at
	}
	return st
}

type refusal struct {
	reason string
	at     time.Time
}

// UpgradeRefused records that an upgrade was refused, and why, for /status.
func (g *Gateway) UpgradeRefused(err error) {
	g.refused.Store(&refusal{reason: err.Error(), at: time.Now().UTC()})
}
