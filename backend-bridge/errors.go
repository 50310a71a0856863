package bridge

import "errors"

var (
	// ErrConfig is wrapped by every error New returns for a bad Config; the
	// error's text names the field or file to fix.
	ErrConfig = errors.New("bad bridge configuration")
	// ErrRunning is returned by Run when the bridge is already running.
	ErrRunning = errors.New("bridge is already running")
	// ErrClosed is returned by Run after Close.
	ErrClosed = errors.New("bridge is closed")
)
