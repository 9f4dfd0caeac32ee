package pbx

import (
	"testing"
	"time"

	"github.com/pnpd/pnpd/pkg/phone"
	"github.com/pnpd/pnpd/pkg/pnp"
	"github.com/pnpd/pnpd/pkg/resolve"
)

func record(key, mac, outcome string) write {
	return write{key: key, ev: pnp.Event{Identity: phone.Identity{MAC: mac}, Outcome: outcome}}
}

// TestRecentWrites keeps what Asterisk acknowledged within commitWindow for
// a replay, and never an older value of a record written again since.
func TestRecentWrites(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		run  func(r *recentWrites)
		at   time.Duration // when take is called, after t0
		want []string      // key+mac+outcome of what take returns
	}{
		{"fresh writes", func(r *recentWrites) {
			r.acked(record(resolve.KeySeen, "a", "provisioned"), t0)
			r.acked(record(resolve.KeyProvisioned, "a", ""), t0.Add(100*time.Millisecond))
		}, time.Second, []string{resolve.KeySeen + "a provisioned", resolve.KeyProvisioned + "a "}},
		{"old writes forgotten", func(r *recentWrites) {
			r.acked(record(resolve.KeySeen, "a", "seen"), t0)
			r.acked(record(resolve.KeySeen, "b", "seen"), t0.Add(2*time.Second))
		}, 3 * time.Second, []string{resolve.KeySeen + "b seen"}},
		{"acknowledged again", func(r *recentWrites) {
			r.acked(record(resolve.KeySeen, "a", "seen"), t0)
			r.acked(record(resolve.KeySeen, "a", "provisioned"), t0.Add(time.Millisecond))
		}, time.Second, []string{resolve.KeySeen + "a provisioned"}},
		{"queued again", func(r *recentWrites) {
			r.acked(record(resolve.KeySeen, "a", "seen"), t0)
			r.queued(record(resolve.KeySeen, "a", "provisioned")) // waits in the queue: newer
		}, time.Second, nil},
		{"another key of the phone", func(r *recentWrites) {
			r.acked(record(resolve.KeySeen, "a", "seen"), t0)
			r.queued(record(resolve.KeyPending, "a", "pending"))
		}, time.Second, []string{resolve.KeySeen + "a seen"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r recentWrites
			tc.run(&r)
			var got []string
			for _, w := range r.take(t0.Add(tc.at)) {
				got = append(got, writeKey(w)+" "+w.ev.Outcome)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("take = %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("take = %q, want %q", got, tc.want)
				}
			}
			if again := r.take(t0.Add(tc.at)); len(again) != 0 {
				t.Errorf("a second take returned %d", len(again))
			}
		})
	}
}
