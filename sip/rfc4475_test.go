package sip_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/pnpd/pnpd/sip"
)

// tortureCase is one message of RFC 4475 ("SIP Torture Test Messages"),
// written out under testdata/rfc4475/{valid,invalid}/<name>.sip (see the
// README there), and what our parser does with it.
type tortureCase struct {
	name    string // RFC 4475's short name, the file name without .sip
	section string
	valid   bool // the RFC calls it well-formed (testdata/rfc4475/valid)
	// refused is the element of the *ParseError that sip.Parse stops at
	// ("" when the message parses).
	refused string
	// value names the header value parser that refuses what sip.Parse let
	// through: "Via" (TopVia), "From", "To" (ParseAddr), "CSeq" (ParseCSeq),
	// "missing" (no From and no To); "" when every value PnP reads parses.
	value string
	// why is required where we part from the RFC: a valid message refused,
	// or an invalid one accepted.
	why string
}

var tortureCases = []tortureCase{
	// 3.1.1: valid messages. A parser must accept them.
	{name: "wsinv", section: "3.1.1.1", valid: true},
	{name: "intmeth", section: "3.1.1.2", valid: true, refused: "control character",
		why: "the To display name holds NUL, BEL and DEL as quoted-pairs; by design (doc.go) our parser refuses " +
			"every control byte but HTAB in a header line: no phone sends one, and nothing taken from a packet " +
			"(into logs, the PBX, a URL) may carry one"},
	{name: "esc01", section: "3.1.1.3", valid: true},
	{name: "escnull", section: "3.1.1.4", valid: true},
	{name: "esc02", section: "3.1.1.5", valid: true},
	{name: "lwsdisp", section: "3.1.1.6", valid: true},
	{name: "longreq", section: "3.1.1.7", valid: true},
	{name: "dblreq", section: "3.1.1.8", valid: true}, // the INVITE after the REGISTER's Content-Length is ignored
	{name: "semiuri", section: "3.1.1.9", valid: true},
	{name: "transports", section: "3.1.1.10", valid: true},
	{name: "mpart01", section: "3.1.1.11", valid: true},
	{name: "unreason", section: "3.1.1.12", valid: true},
	{name: "noreason", section: "3.1.1.13", valid: true},

	// 3.1.2: invalid messages. Our parser checks the framing only and
	// parses a header value when PnP asks for it, so a message whose
	// defect lies inside a value parses; none of them is a SUBSCRIBE, so
	// the responder drops each one at the method check (pkg/pnp's
	// TestTortureGetsNoReply sends them all).
	{name: "badinv01", section: "3.1.2.1", value: "Via",
		why: "empty Via and Contact parameters; the framing is sound, TopVia refuses the Via"},
	{name: "clerr", section: "3.1.2.2", refused: "Content-Length"},
	{name: "ncl", section: "3.1.2.3", refused: "Content-Length"},
	{name: "scalar02", section: "3.1.2.4", value: "CSeq",
		why: "overlarge CSeq, Max-Forwards, Expires and expires; ParseCSeq refuses the CSeq, the others are never read"},
	{name: "scalarlg", section: "3.1.2.5", value: "CSeq",
		why: "overlarge CSeq, Retry-After and Warning code in a response; ParseCSeq refuses the CSeq"},
	{name: "quotbal", section: "3.1.2.6", value: "To",
		why: "unterminated quoted display name; ParseAddr refuses the To"},
	{name: "ltgtruri", section: "3.1.2.7", refused: "Request-URI"},
	{name: "lwsruri", section: "3.1.2.8", refused: "SIP version"}, // "sip:user@example.com;" then "lr SIP/2.0"
	{name: "lwsstart", section: "3.1.2.9",
		why: "several SP between the parts of the request line: taken on purpose, phones send them (RFC 4475 lets a robust parser accept it)"},
	{name: "trws", section: "3.1.2.10",
		why: "SP after SIP/2.0: taken on purpose, as for lwsstart"},
	{name: "escruri", section: "3.1.2.11",
		why: "escaped headers in the Request-URI; the Request-URI of a SUBSCRIBE to the group is never used"},
	{name: "baddate", section: "3.1.2.12",
		why: "a time zone other than GMT in Date, a header PnP never reads"},
	{name: "regbadct", section: "3.1.2.13",
		why: "a Contact URI with '?' outside <>; it parses as an addr-spec whose URI keeps the '?', harmless in a REGISTER we drop"},
	{name: "badaspec", section: "3.1.2.14", value: "To",
		why: "spaces inside <> of the To; ParseAddr refuses the To"},
	// The archive's file ends after "l: 0" CRLF with no empty line: the
	// header never ends.
	{name: "baddn", section: "3.1.2.15", refused: "end of headers"},
	{name: "badvers", section: "3.1.2.16", refused: "SIP version"},
	{name: "mismatch01", section: "3.1.2.17",
		why: "CSeq method INVITE in an OPTIONS; the responder checks the method of the request line, and OPTIONS is dropped"},
	{name: "mismatch02", section: "3.1.2.18",
		why: "CSeq method INVITE in a NEWMETHOD request; dropped as not a SUBSCRIBE"},
	{name: "bigcode", section: "3.1.2.19", refused: "status code"},

	// 3.2 and 3.3, the parse-level ones.
	{name: "badbranch", section: "3.2.1", valid: true},
	{name: "insuf", section: "3.3.1", value: "missing",
		why: "no Call-ID, From or To: framing is sound, the responder drops it for missing headers (were it a SUBSCRIBE)"},
	{name: "unkscm", section: "3.3.2", valid: true},
	{name: "novelsc", section: "3.3.3", valid: true},
	{name: "unksm2", section: "3.3.4", valid: true},
	{name: "multi01", section: "3.3.8",
		why: "Call-ID, CSeq, From, To and Max-Forwards twice; Get returns the first of each, and an INVITE is dropped anyway"},
	{name: "mcl01", section: "3.3.9", refused: "Content-Length"},
	{name: "bcast", section: "3.3.10", valid: true},
	{name: "cparam01", section: "3.3.12", valid: true},
	{name: "cparam02", section: "3.3.13", valid: true},
	{name: "regescrt", section: "3.3.14", valid: true},

	// 3.4
	{name: "inv2543", section: "3.4.1", valid: true},
}

// path is where the case's file lives.
func (c tortureCase) path() string {
	dir := "invalid"
	if c.valid {
		dir = "valid"
	}
	return filepath.Join("testdata", "rfc4475", dir, c.name+".sip")
}

func TestRFC4475(t *testing.T) {
	for _, c := range tortureCases {
		t.Run(c.name, func(t *testing.T) {
			data, err := os.ReadFile(c.path())
			if err != nil {
				t.Fatal(err)
			}
			if c.valid && c.refused != "" && c.why == "" {
				t.Fatalf("%s (%s) is refused, against the RFC, without a reason written down", c.name, c.section)
			}
			if !c.valid && c.refused == "" && c.why == "" {
				t.Fatalf("%s (%s) is accepted, against the RFC, without a reason written down", c.name, c.section)
			}

			m, err := sip.Parse(bytes.Clone(data))
			if c.refused != "" {
				var pe *sip.ParseError
				if !errors.As(err, &pe) || pe.What != c.refused {
					t.Fatalf("Parse: %v, want a refusal at %q", err, c.refused)
				}
				if !errors.Is(err, sip.ErrMalformed) {
					t.Fatalf("Parse: %v does not unwrap to ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkParse(t, data) // parse -> build -> parse, as the fuzzer checks
			if got := refusingValue(m); got != c.value {
				t.Errorf("value refused: %q, want %q", got, c.value)
			}
			// Every accepted torture message must be dropped by the
			// responder: none is a ua-profile SUBSCRIBE.
			if m.IsRequest() && string(m.Method) == "SUBSCRIBE" {
				t.Errorf("%s is a SUBSCRIBE: the PnP responder would look at it", c.name)
			}
		})
	}
}

// refusingValue names the first header value PnP reads that does not parse
// (see tortureCase.value).
func refusingValue(m *sip.Message) string {
	if m.Get(sip.HdrFrom) == nil && m.Get(sip.HdrTo) == nil {
		return "missing"
	}
	if _, err := m.TopVia(); err != nil {
		return "Via"
	}
	if _, err := sip.ParseAddr(m.Get(sip.HdrFrom)); err != nil {
		return "From"
	}
	if _, err := sip.ParseAddr(m.Get(sip.HdrTo)); err != nil {
		return "To"
	}
	if _, _, err := sip.ParseCSeq(m.Get(sip.HdrCSeq)); err != nil {
		return "CSeq"
	}
	return ""
}

// Every file under testdata/rfc4475 has its row, and every row its file.
func TestRFC4475TableMatchesFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "rfc4475", "*", "*.sip"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range tortureCases {
		want = append(want, c.path())
	}
	sort.Strings(files)
	sort.Strings(want)
	if len(files) != len(want) {
		t.Fatalf("%d files, %d table rows:\nfiles %v\nrows  %v", len(files), len(want), files, want)
	}
	for i := range files {
		if files[i] != want[i] {
			t.Fatalf("file %s, row %s: table and testdata differ", files[i], want[i])
		}
	}
}
