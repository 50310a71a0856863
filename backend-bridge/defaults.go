package bridge

import "time"

// The defaults of Config's link settings, which the gateway's options show.
const (
	DefaultSessionExpiry = 7 * 24 * time.Hour // Config.SessionExpiry
	DefaultRetryMax      = 2 * time.Minute    // Config.RetryMax
)
