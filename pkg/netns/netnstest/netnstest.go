// Package netnstest holds the test helpers around package netns that several
// packages' tests share: skip, or fail under CI, when namespaces cannot be
// made here, and a veth pair removed when the test ends.
package netnstest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/netns"
)

// SkipOrFail skips the test, except under CI=true, where a skip would hide
// that nothing was tested: there it fails.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true, cannot skip: %s", msg)
	}
	t.Skip(msg)
}

// Require skips (or fails under CI) unless network namespaces can be made.
func Require(t testing.TB) {
	t.Helper()
	if err := netns.Check(); err != nil {
		SkipOrFail(t, "needs network namespaces: %v", err)
	}
}

// NewPair is Require, then a netns.Pair that is removed when the test ends.
func NewPair(t testing.TB, opts netns.Options) *netns.Pair {
	t.Helper()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := netns.NewPair(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("removing namespaces: %v", err)
		}
	})
	return p
}
