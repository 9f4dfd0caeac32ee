package simulate

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pnpd/pnpd/pkg/phone"
)

func TestFetchPlan(t *testing.T) {
	const mac = "001fc11b4e1c"
	tests := []struct {
		brand, base string
		want        []string
	}{
		{"htek", "http://admin:123456@192.168.0.25:88", []string{
			"http://admin:123456@192.168.0.25:88/factory0000.xml",
			"http://admin:123456@192.168.0.25:88/cfg0000.xml",
			"http://admin:123456@192.168.0.25:88/001fc11b4e1c.cfg",
			"http://admin:123456@192.168.0.25:88/cfg001fc11b4e1c",
			"http://admin:123456@192.168.0.25:88/cfg001fc11b4e1c.xml",
		}},
		{"grandstream", "http://p/gs/", []string{"http://p/gs/cfg001fc11b4e1c", "http://p/gs/cfg001fc11b4e1c.xml", "http://p/gs/cfg.xml"}},
		{"grandstream", "http://p/gs//", []string{"http://p/gs/cfg001fc11b4e1c", "http://p/gs/cfg001fc11b4e1c.xml", "http://p/gs/cfg.xml"}},
		{"yealink", "https://p/y", []string{"https://p/y/y000000000000.cfg", "https://p/y/001fc11b4e1c.cfg"}},
		{"snom", "http://p/snom/settings.php?mac={mac}", []string{"http://p/snom/settings.php?mac=001FC11B4E1C"}},
		{"gigaset", "http://p/xml/%MACD.xml", []string{"http://p/xml/001FC11B4E1C.xml"}},
		{"panasonic", "http://10.0.0.2", []string{"http://10.0.0.2/KX-HDV130.cfg"}},
		{"panasonic", "http://10.0.0.2/pana", []string{"http://10.0.0.2/pana/KX-HDV130.cfg"}},
		{"panasonic", "http://p/{MODEL}/{MAC}.cfg?fw={fwver}&m={mac}", []string{"http://p/KX-HDV130/001FC11B4E1C.cfg?fw=03.000&m=001fc11b4e1c"}},
		{"fanvil", "http://p/fanvil/", []string{"http://p/fanvil/001fc11b4e1c.cfg"}},
		{"fanvil", "http://p/fanvil/$mac.cfg", []string{"http://p/fanvil/001fc11b4e1c.cfg"}},
		{"audiocodes", "http://p/ac", []string{"http://p/ac/001fc11b4e1c.cfg"}},
		{"audiocodes", "tftp://p/ac/phone.cfg", []string{"tftp://p/ac/phone.cfg"}},
	}
	for _, tt := range tests {
		t.Run(tt.brand+" "+tt.base, func(t *testing.T) {
			s := shapes[tt.brand]
			got := s.fetch.urls(tt.base, mac, s.model, s.fw)
			if !slices.Equal(got, tt.want) {
				t.Errorf("urls =\n %q\nwant\n %q", got, tt.want)
			}
		})
	}
	for _, b := range phone.Brands() {
		if s := shapes[b]; len(s.fetch.urls("http://p/", mac, s.model, s.fw)) == 0 {
			t.Errorf("%s fetches nothing", b)
		}
	}
}

// provServer serves files by path and records what it was asked for.
type provServer struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
	auth  []string
	uas   []string
}

func newProvServer(t *testing.T, files map[string]string) *provServer {
	p := &provServer{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.paths = append(p.paths, r.URL.RequestURI())
		u, pw, _ := r.BasicAuth()
		p.auth = append(p.auth, u+":"+pw)
		p.uas = append(p.uas, r.UserAgent())
		p.mu.Unlock()
		body, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(body))
	}))
	t.Cleanup(p.Close)
	return p
}

func TestRunFetch(t *testing.T) {
	const mac = "001fc11b4e1c"
	srv := newProvServer(t, map[string]string{"/prov/cfg" + mac: "<config/>"})
	url := strings.Replace(srv.URL, "http://", "http://admin:s3cret@", 1) + "/prov"
	resp := newResponder(t, responderConfig{url: url})
	var stderr bytes.Buffer
	o := loopOptions(t, phone.BrandHtek, resp)
	o.MAC, o.Fetch, o.Stderr = "00:1F:C1:1B:4E:1C", true, &stderr
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, stderr.String())
	}
	var statuses []int
	for _, f := range res.Fetched {
		statuses = append(statuses, f.Status)
	}
	if !slices.Equal(statuses, []int{404, 404, 404, 200}) || res.Fetched[3].Bytes != int64(len("<config/>")) {
		t.Errorf("Fetched = %+v", res.Fetched)
	}
	srv.mu.Lock()
	wantPaths := []string{"/prov/factory0000.xml", "/prov/cfg0000.xml", "/prov/" + mac + ".cfg", "/prov/cfg" + mac}
	if !slices.Equal(srv.paths, wantPaths) {
		t.Errorf("server saw %q, want %q", srv.paths, wantPaths)
	}
	if srv.auth[0] != "admin:s3cret" || !strings.HasPrefix(srv.uas[0], "Htek UC912G ") {
		t.Errorf("auth %q, User-Agent %q", srv.auth[0], srv.uas[0])
	}
	srv.mu.Unlock()
	out := stderr.String()
	host := strings.TrimPrefix(srv.URL, "http://")
	wantOut := "fetch http://***@" + host + "/prov/factory0000.xml -> 404 Not Found\n" +
		"fetch http://***@" + host + "/prov/cfg0000.xml -> 404 Not Found\n" +
		"fetch http://***@" + host + "/prov/" + mac + ".cfg -> 404 Not Found\n" +
		"fetch http://***@" + host + "/prov/cfg" + mac + " -> 200 OK\n"
	if out != wantOut {
		t.Errorf("Stderr =\n%s\nwant\n%s", out, wantOut)
	}
	if strings.Contains(out, "s3cret") || strings.Contains(out, "admin") {
		t.Error("credentials on Stderr")
	}
}

func TestRunFetchYealinkBoth(t *testing.T) {
	srv := newProvServer(t, map[string]string{"/y000000000000.cfg": "#!version:1.0.0.1", "/0015657322ff.cfg": "#!version:1.0.0.1"})
	resp := newResponder(t, responderConfig{url: srv.URL + "/"})
	o := loopOptions(t, phone.BrandYealink, resp)
	o.MAC, o.Fetch = "0015657322ff", true
	res, err := Run(context.Background(), o)
	if err != nil || len(res.Fetched) != 2 || !res.Fetched[0].OK() || !res.Fetched[1].OK() {
		t.Errorf("Run = %+v, %v; want both Yealink files", res.Fetched, err)
	}
}

func TestRunFetchNothing(t *testing.T) {
	tests := []struct {
		name, brand, url, wantOut string
	}{
		{"all 404", phone.BrandGrandstream, "", "404 Not Found"},
		{"tftp", phone.BrandAudioCodes, "tftp://u:pw@127.0.0.1/ac/", "unsupported URL scheme"},
		{"refused", phone.BrandFanvil, "http://u:pw@127.0.0.1:1/", "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.url
			if url == "" {
				url = newProvServer(t, nil).URL + "/gs/"
			}
			resp := newResponder(t, responderConfig{url: url})
			var stderr bytes.Buffer
			o := loopOptions(t, tt.brand, resp)
			o.Fetch, o.Stderr = true, &stderr
			res, err := Run(context.Background(), o)
			if !errors.Is(err, ErrFetch) || len(res.Fetched) == 0 || res.URL != url {
				t.Errorf("Run = %+v, %v; want ErrFetch", res, err)
			}
			if !strings.Contains(stderr.String(), tt.wantOut) || strings.Contains(stderr.String(), "pw") ||
				strings.Contains(err.Error(), "pw") {
				t.Errorf("Stderr %q, err %v", stderr.String(), err)
			}
		})
	}
}
