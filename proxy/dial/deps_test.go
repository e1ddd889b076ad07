package dial

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps the dialer free of policy: it must import none of
// Sluice's other packages.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/sluiceproxy/sluice/"
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, mod) && p != mod+"proxy/dial" {
			t.Errorf("proxy/dial depends on %s", p)
		}
	}
}
