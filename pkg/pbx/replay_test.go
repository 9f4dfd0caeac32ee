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

// ack queues w and has it acknowledged at t, as the writer would.
func ack(r *recentWrites, w write, t time.Time) {
	r.queued(w)
	r.done(w, true, t)
}

// TestRecentWrites keeps what Asterisk acknowledged within commitWindow of
// its last acknowledgement for a replay, and never an older value of a
// record whose newer write is queued.
func TestRecentWrites(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seen := func(mac, outcome string) write { return record(resolve.KeySeen, mac, outcome) }
	tests := []struct {
		name string
		run  func(r *recentWrites)
		want []string // key+mac+" "+outcome of what take returns
	}{
		{"fresh writes", func(r *recentWrites) {
			ack(r, seen("a", "provisioned"), t0)
			ack(r, record(resolve.KeyProvisioned, "a", ""), t0.Add(100*time.Millisecond))
		}, []string{resolve.KeySeen + "a provisioned", resolve.KeyProvisioned + "a "}},
		{"older than the window before the last", func(r *recentWrites) {
			ack(r, seen("a", "seen"), t0)
			ack(r, seen("b", "seen"), t0.Add(3*time.Second))
		}, []string{resolve.KeySeen + "b seen"}},
		{"acknowledged again", func(r *recentWrites) {
			ack(r, seen("a", "seen"), t0)
			ack(r, seen("a", "provisioned"), t0.Add(time.Millisecond))
		}, []string{resolve.KeySeen + "a provisioned"}},
		{"newer write queued", func(r *recentWrites) {
			ack(r, seen("a", "seen"), t0)
			r.queued(seen("a", "provisioned")) // waits in the queue
		}, nil},
		{"newer write queued while the older was in flight", func(r *recentWrites) {
			old, newer := seen("a", "seen"), seen("a", "provisioned")
			r.queued(old)
			r.queued(newer)
			r.done(old, true, t0) // the newer one is still queued
		}, nil},
		{"newer write lost to a full queue", func(r *recentWrites) {
			ack(r, seen("a", "seen"), t0)
			r.queued(seen("a", "provisioned"))
			r.unqueued(seen("a", "provisioned"))
			ack(r, seen("b", "seen"), t0.Add(time.Millisecond))
		}, []string{resolve.KeySeen + "b seen"}},
		{"refused by Asterisk", func(r *recentWrites) {
			r.queued(seen("a", "seen"))
			r.done(seen("a", "seen"), false, t0)
			ack(r, seen("a", "provisioned"), t0.Add(time.Millisecond))
		}, []string{resolve.KeySeen + "a provisioned"}},
		{"another record of the phone", func(r *recentWrites) {
			ack(r, seen("a", "seen"), t0)
			r.queued(record(resolve.KeyPending, "a", "pending"))
		}, []string{resolve.KeySeen + "a seen"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r recentWrites
			tc.run(&r)
			var got []string
			for _, w := range r.take() {
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
			if again := r.take(); len(again) != 0 {
				t.Errorf("a second take returned %d", len(again))
			}
		})
	}
}

// TestReplayKeepsTheOverlay puts a replayed provisioned record back in the
// overlay, so that once goes on holding for the phone until a snapshot
// has the record again, and counts it.
func TestReplayKeepsTheOverlay(t *testing.T) {
	p := New(Config{Queue: 1})
	w := record(resolve.KeyProvisioned, "001565000001", "")
	ack(&p.recent, w, time.Now())
	ack(&p.recent, record(resolve.KeySeen, "001565000001", "provisioned"), time.Now())
	p.replay()
	if !p.ov.has(resolve.KeyProvisioned, "001565000001") {
		t.Errorf("the replayed provisioned record is not in the overlay")
	}
	if st := p.Stats(); st.Replayed != 1 || st.ReplayLost != 1 || st.Overflows != 0 || st.QueueDepth != 1 {
		t.Errorf("stats %+v: want 1 replayed, 1 lost to the one-place queue, no overflow counted", st)
	}
}
