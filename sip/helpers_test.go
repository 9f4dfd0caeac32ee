package sip_test

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/pnpd/pnpd/sip"
)

// packet is one testdata file.
type packet struct {
	name string // file name without directory
	data []byte
}

// readDir returns the *.sip files of testdata/dir, sorted by name.
func readDir(tb testing.TB, dir string) []packet {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.sip"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) == 0 {
		tb.Fatalf("no files in testdata/%s", dir)
	}
	sort.Strings(files)
	out := make([]packet, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, packet{name: filepath.Base(f), data: b})
	}
	return out
}

// validPackets is every testdata packet that must parse.
func validPackets(tb testing.TB) []packet {
	var out []packet
	for _, dir := range []string{"phones", "responses", "valid"} {
		for _, p := range readDir(tb, dir) {
			p.name = dir + "/" + p.name
			out = append(out, p)
		}
	}
	return out
}

// fields is what a PnP responder reads from a message, as strings for comparing.
type fields struct {
	Method, RURI        string
	RUser, RHost        string
	RPort               int
	Status              int
	Reason              string
	ViaHost             string
	ViaPort             int
	Branch              string
	RPortFlag           bool // Via has an rport parameter
	FromURI, FromTag    string
	ToURI, ToTag        string
	CallID              string
	CSeq                uint32
	CSeqMethod          string
	Contact             string
	EventPkg            string
	EventParams         map[string]string
	Expires, ContentLen string
	UserAgent           string
	Body                string
}

// extract parses every field PnP needs; any error is returned.
func extract(m *sip.Message) (fields, error) {
	var f fields
	if m.IsRequest() {
		f.Method, f.RURI = string(m.Method), string(m.RequestURI)
		u, err := sip.ParseURI(m.RequestURI)
		if err != nil {
			return f, err
		}
		f.RUser, f.RHost, f.RPort = string(u.User), string(u.Host), u.Port
	} else {
		f.Status, f.Reason = m.StatusCode, string(m.Reason)
	}
	via, err := m.TopVia()
	if err != nil {
		return f, err
	}
	f.ViaHost, f.ViaPort, f.Branch = string(via.Host), via.Port, string(via.Branch())
	_, f.RPortFlag = via.Params.Get("rport")
	from, err := sip.ParseAddr(m.Get(sip.HdrFrom))
	if err != nil {
		return f, err
	}
	f.FromURI, f.FromTag = string(from.URI), string(from.Tag())
	to, err := sip.ParseAddr(m.Get(sip.HdrTo))
	if err != nil {
		return f, err
	}
	f.ToURI, f.ToTag = string(to.URI), string(to.Tag())
	f.CallID = string(m.Get(sip.HdrCallID))
	seq, method, err := sip.ParseCSeq(m.Get(sip.HdrCSeq))
	if err != nil {
		return f, err
	}
	f.CSeq, f.CSeqMethod = seq, string(method)
	if c := m.Get(sip.HdrContact); c != nil {
		a, err := sip.ParseAddr(c)
		if err != nil {
			return f, err
		}
		if _, err := sip.ParseURI(a.URI); err != nil {
			return f, err
		}
		f.Contact = string(a.URI)
	}
	if e := m.Get(sip.HdrEvent); e != nil {
		pkg, params, err := sip.ParseEvent(e)
		if err != nil {
			return f, err
		}
		f.EventPkg = string(pkg)
		f.EventParams = map[string]string{}
		params.Each(func(n, v []byte) bool {
			f.EventParams[string(n)] = string(v)
			return true
		})
	}
	f.Expires = string(m.Get(sip.HdrExpires))
	f.ContentLen = string(m.Get(sip.HdrContentLength))
	f.UserAgent = string(m.Get(sip.HdrUserAgent))
	f.Body = string(m.Body)
	return f, nil
}

// pnpView holds the PnP fields as slices, for the zero-allocation check.
type pnpView struct {
	via            sip.Via
	from, to, cont sip.Addr
	uri            sip.URI
	seq            uint32
	pkg, vendor    []byte
}

// extractView is extract without the strings: it must not allocate.
func extractView(m *sip.Message, v *pnpView) error {
	var err error
	if v.uri, err = sip.ParseURI(m.RequestURI); err != nil {
		return err
	}
	if v.via, err = m.TopVia(); err != nil {
		return err
	}
	if v.from, err = sip.ParseAddr(m.Get(sip.HdrFrom)); err != nil {
		return err
	}
	if v.to, err = sip.ParseAddr(m.Get(sip.HdrTo)); err != nil {
		return err
	}
	if v.cont, err = sip.ParseAddr(m.Get(sip.HdrContact)); err != nil {
		return err
	}
	if v.seq, _, err = sip.ParseCSeq(m.Get(sip.HdrCSeq)); err != nil {
		return err
	}
	var params sip.Params
	if v.pkg, params, err = sip.ParseEvent(m.Get(sip.HdrEvent)); err != nil {
		return err
	}
	v.vendor, _ = params.Get("vendor")
	return nil
}
