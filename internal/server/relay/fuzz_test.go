package relay

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// FuzzHeaders feeds arbitrary Authorization and X-Forwarded-For values to
// the relay's two header parsers.
func FuzzHeaders(f *testing.F) {
	f.Add("Bearer abc.def.ghi", "198.51.100.7, 10.1.1.1", "10.0.0.1:1")
	f.Add("bearer  x ", "junk,,", "[2001:db8::1]:443")
	f.Add("Basic", "", "not an address")
	r := &Relay{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}}}
	f.Fuzz(func(t *testing.T, auth, xff, peer string) {
		if tok, ok := bearer(auth); ok {
			if tok == "" || strings.TrimSpace(tok) != tok || !strings.Contains(auth, tok) {
				t.Fatalf("bearer(%q) = %q", auth, tok)
			}
		}
		h := http.Header{}
		h.Set("X-Forwarded-For", xff)
		src := r.source(peer, h)
		if src.IsValid() {
			_ = sourceKey(src)
			// A source is the peer itself or taken from the header only
			// when the peer is a trusted proxy.
			if p, err := netip.ParseAddrPort(peer); err == nil && !r.trusted(p.Addr().Unmap()) && src != p.Addr().Unmap() {
				t.Fatalf("untrusted peer %s reported as %s", peer, src)
			}
		}
	})
}
