package systemtest

import (
	"strings"
	"testing"
)

// TestRefusesBadTrustedProxies: --trusted-proxies takes 0 to 16 and says
// so.
func TestRefusesBadTrustedProxies(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"-1", "17"} {
		if out := refusal(t, "--trusted-proxies", v); !strings.Contains(out, "--trusted-proxies "+v+": want 0 to 16") {
			t.Errorf("--trusted-proxies %s: want a refusal naming the range, got: %s", v, out)
		}
	}
}
