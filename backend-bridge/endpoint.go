package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
)

// Endpoint is how to reach a cloud broker: its URL and TLS files. The bridge
// connects with it, and so does lockyctl, the back-end's companion, so that
// both take a URL and its files the same way and say the same of a mistake.
type Endpoint struct {
	// URL is mqtt://host[:port] or mqtts://host[:port]; the port defaults
	// to 1883 and 8883.
	URL string
	// CAFile is the PEM of the CAs to trust (mqtts only); empty means the
	// system's. CertFile and KeyFile are a client certificate, both or
	// neither.
	CAFile, CertFile, KeyFile string
}

// Resolve checks e and returns its URL with the port filled in, and the TLS
// configuration (nil for mqtt://). Its errors wrap ErrConfig and name the
// field or file.
func (e Endpoint) Resolve() (*url.URL, *tls.Config, error) {
	u, err := parseURL(e.URL)
	if err != nil {
		return nil, nil, err
	}
	tc, err := tlsConfig(e, u)
	if err != nil {
		return nil, nil, err
	}
	return u, tc, nil
}

// parseURL checks the broker URL and fills in the default port.
func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, configErr("URL %q: %w", raw, err)
	}
	var port string
	switch u.Scheme {
	case "mqtt":
		port = "1883"
	case "mqtts":
		port = "8883"
	default:
		return nil, configErr("URL %q: the scheme must be mqtt:// or mqtts://", raw)
	}
	if u.Hostname() == "" {
		return nil, configErr("URL %q has no host: write mqtt://host:port", raw)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, configErr("URL %q: give only scheme, host and port (credentials go apart)", raw)
	}
	return u, nil
}

// tlsConfig loads the TLS files; it returns nil for mqtt://.
func tlsConfig(cfg Endpoint, u *url.URL) (*tls.Config, error) {
	if u.Scheme != "mqtts" {
		if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
			return nil, configErr("TLS files are set but URL %q is not mqtts://: use mqtts:// or drop the files", cfg.URL)
		}
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, configErr("CAFile: cannot read %q: %w", cfg.CAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, configErr("CAFile %q holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, configErr("CertFile %q and KeyFile %q: give both or neither", cfg.CertFile, cfg.KeyFile)
	}
	if cfg.CertFile != "" {
		for _, f := range []struct{ field, path string }{{"CertFile", cfg.CertFile}, {"KeyFile", cfg.KeyFile}} {
			if _, err := os.ReadFile(f.path); err != nil {
				return nil, configErr("%s: cannot read %q: %w", f.field, f.path, err)
			}
		}
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, configErr("CertFile %q and KeyFile %q are not a matching PEM certificate and key: %w", cfg.CertFile, cfg.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
