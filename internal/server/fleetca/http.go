package fleetca

import (
	"net"
	"net/http"
	"time"
)

// HTTPClient returns a client for one replica to call another's
// VaultService (a follower forwarding a request to the leader): HTTP/2 over
// TLS 1.3, presenting this replica's certificate, trusting the fleet CA
// only. Requests are bounded by their context; the dial and handshake by
// 5 s each.
func (t *TLS) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     t.ClientConfig(""), // ServerName: the URL's host
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}}
}
