package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	gosip "github.com/jart/gosip/sip"

	"github.com/pnpd/pnpd/sip"
)

// ParseRow compares our parser with gosip's ParseMsg on one packet.
type ParseRow struct {
	Packet string
	Ours   Timing // (*sip.Message).Parse, one Message reused
	New    Timing // sip.Parse: a new Message each time
	Gosip  Timing
	// GosipErr is set when gosip refuses the packet (it wants exactly one
	// space between the parts of the start line, phones send more).
	GosipErr error
}

// Ratio is gosip's time per packet over ours, or 0 when gosip refused it.
func (r ParseRow) Ratio() float64 {
	if r.GosipErr != nil || r.Ours.NsPerOp == 0 {
		return 0
	}
	return r.Gosip.NsPerOp / r.Ours.NsPerOp
}

// ComparePackets reads every *.sip file of dir (sip/testdata/phones in a
// checkout) and times both parsers on each, for about benchtime each. Both
// copy the packet into a scratch buffer first on every iteration: ours
// unfolds folded lines in place and gosip keeps references into its input.
func ComparePackets(dir string, benchtime time.Duration) ([]ParseRow, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.sip"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("bench: no *.sip packets in %s (run from a checkout, or pass -packets)", dir)
	}
	slices.Sort(files)
	var rows []ParseRow
	for _, file := range files {
		pkt, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		if _, err := sip.Parse(slices.Clone(pkt)); err != nil {
			return nil, fmt.Errorf("bench: %s: %w", file, err)
		}
		row := ParseRow{Packet: strings.TrimSuffix(filepath.Base(file), ".sip")}
		buf := make([]byte, len(pkt))
		var m sip.Message
		row.Ours = measure(benchtime, func() {
			copy(buf, pkt)
			_ = m.Parse(buf)
		})
		row.New = measure(benchtime, func() {
			copy(buf, pkt)
			_, _ = sip.Parse(buf)
		})
		if _, err := gosip.ParseMsg(slices.Clone(pkt)); err != nil {
			// gosip's error quotes the whole packet: keep its first line.
			msg, _, _ := strings.Cut(err.Error(), "\n")
			row.GosipErr = fmt.Errorf("gosip refuses it: %s", msg)
		} else {
			row.Gosip = measure(benchtime, func() {
				copy(buf, pkt)
				_, _ = gosip.ParseMsg(buf)
			})
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// Timing is one parser on one packet: iterations, and per iteration the
// time and the heap allocations (as the testing package counts them).
type Timing struct {
	N           int
	NsPerOp     float64
	AllocsPerOp float64
	BytesPerOp  float64
}

// measure runs fn for about d (in batches, checking the clock between
// them) after a warm-up, and reads the allocation counters around it.
func measure(d time.Duration, fn func()) Timing {
	for range 1000 {
		fn()
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		for range 1000 {
			fn()
		}
		n += 1000
	}
	el := time.Since(start)
	runtime.ReadMemStats(&after)
	return Timing{
		N:           n,
		NsPerOp:     float64(el.Nanoseconds()) / float64(n),
		AllocsPerOp: float64(after.Mallocs-before.Mallocs) / float64(n),
		BytesPerOp:  float64(after.TotalAlloc-before.TotalAlloc) / float64(n),
	}
}
