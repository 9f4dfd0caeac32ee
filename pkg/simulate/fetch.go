package simulate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/pnpd/pnpd/pkg/resolve"
)

// maxFetchBody bounds how much of a configuration file Run reads.
const maxFetchBody = 1 << 20

// FetchResult is one HTTP GET of a configuration file.
type FetchResult struct {
	URL    string // the URL fetched, credentials replaced by "***" (safe to print)
	Status int    // HTTP status code, 0 when no response came
	Bytes  int64  // body bytes read (at most 1 MiB)
	Err    error  // transport error or unsupported scheme; nil when a response came
}

// OK reports whether the file downloaded (a 2xx response).
func (f FetchResult) OK() bool { return f.Err == nil && f.Status >= 200 && f.Status < 300 }

// macro is a URL macro a phone expands, and what it expands to, written with
// the placeholders of fileVars.
type macro struct{ from, to string }

// fetchPlan is the order in which a brand's phone asks for its files.
type fetchPlan struct {
	files    []string // names appended to the URL; nil: the URL itself is the file
	keepFile bool     // a URL whose last path segment has a dot is the file itself
	all      bool     // fetch every file; else stop at the first that downloads
	macros   []macro  // macros the phone expands in the URL it was given
}

// urls lists the URLs a phone of the plan fetches after PnP gave it base.
// Placeholders in file names and macro values: {mac} (lower-case),
// {MAC} (upper-case), {MODEL}, {fwver}.
func (p fetchPlan) urls(base, mac, model, fw string) []string {
	vars := strings.NewReplacer("{mac}", mac, "{MAC}", strings.ToUpper(mac), "{MODEL}", model, "{fwver}", fw)
	for _, m := range p.macros {
		base = strings.ReplaceAll(base, m.from, vars.Replace(m.to))
	}
	if len(p.files) == 0 || (p.keepFile && hasFileName(base)) {
		return []string{base}
	}
	dir := strings.TrimRight(base, "/") + "/"
	out := make([]string, 0, len(p.files))
	for _, f := range p.files {
		out = append(out, dir+vars.Replace(f))
	}
	return out
}

// hasFileName reports whether the URL's last path segment looks like a file
// (has a dot), as Panasonic's manual describes: http://10.0.0.2/pana is a
// directory, http://10.0.0.2/pana/KX-HDV130.cfg a file.
func hasFileName(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	path := u.Path
	seg := path[strings.LastIndexByte(path, '/')+1:]
	return strings.Contains(seg, ".")
}

var errScheme = errors.New("simulate: unsupported URL scheme (only http and https are fetched)")

// fetch GETs the plan's files as the phone would, logging each attempt to w as
// "fetch URL -> status" with credentials hidden.
func fetch(ctx context.Context, client *http.Client, w io.Writer, plan fetchPlan, base, mac, model, fw, ua string) []FetchResult {
	var out []FetchResult
	for _, u := range plan.urls(base, mac, model, fw) {
		r := fetchOne(ctx, client, u, ua)
		out = append(out, r)
		switch {
		case r.Err != nil:
			fmt.Fprintf(w, "fetch %s -> error: %v\n", r.URL, r.Err)
		default:
			fmt.Fprintf(w, "fetch %s -> %d %s\n", r.URL, r.Status, http.StatusText(r.Status))
		}
		if r.OK() && !plan.all {
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	return out
}

func fetchOne(ctx context.Context, client *http.Client, raw, ua string) FetchResult {
	r := FetchResult{URL: resolve.Redact(raw)}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse errors quote the URL: keep only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		r.Err = fmt.Errorf("simulate: bad URL: %w", err)
		return r
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		r.Err = fmt.Errorf("%w: %q", errScheme, u.Scheme)
		return r
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		r.Err = fmt.Errorf("simulate: request: %w", unwrapURLError(err))
		return r
	}
	req.Header.Set("User-Agent", ua)
	resp, err := client.Do(req)
	if err != nil {
		r.Err = fmt.Errorf("simulate: GET: %w", unwrapURLError(err))
		return r
	}
	defer resp.Body.Close()
	r.Status = resp.StatusCode
	r.Bytes, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxFetchBody))
	if err != nil {
		r.Err = fmt.Errorf("simulate: reading body: %w", unwrapURLError(err))
	}
	return r
}

// unwrapURLError drops net/http's *url.Error wrapper, whose message repeats
// the URL (with the user name) in front of the reason.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
