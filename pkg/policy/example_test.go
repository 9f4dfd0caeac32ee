package policy_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/policy"
	"github.com/pnpd/pnpd/pkg/resolve"
)

// A datagram goes through Source before it is parsed, a new SUBSCRIBE
// through Admit before its 200.
func Example() {
	cfg, err := config.Parse([]byte("[policy]\ndeny_macs = [\"00:15:65\"]\n"))
	if err != nil {
		panic(err)
	}
	p, err := policy.New(policy.Config{Policy: cfg.Policy})
	if err != nil {
		panic(err)
	}
	now := time.Now()
	src := netip.MustParseAddr("192.168.1.10")
	fmt.Println(p.Source(src, now))

	r := p.Admit(policy.Phone{MAC: "001565aabbcc", Src: src, ContactIsSource: true}, now)
	fmt.Println(r.Refused(), r)
	fmt.Println(p.Stats().Refused)
	// Output:
	// true
	// true mac-denied: deny_macs entry 001565 matches 001565aabbcc
	// map[mac-denied:1]
}

// With unknown = "observe", a phone that only the default URL would
// answer gets nothing.
func ExamplePolicy_Resolver() {
	cfg, err := config.Parse([]byte(`
[resolve]
default = "http://prov.example.com/{mac}/"

[[resolve.rule]]
mac_prefix = "001565"
url = "http://yealink.example.com/"

[policy]
unknown = "observe"
`))
	if err != nil {
		panic(err)
	}
	p, err := policy.New(policy.Config{Policy: cfg.Policy})
	if err != nil {
		panic(err)
	}
	r := p.Resolver(resolve.NewStatic(cfg.Resolve))
	for _, mac := range []string{"001565aabbcc", "0004f2000001"} {
		d, err := r.Resolve(context.Background(), resolve.Request{MAC: mac})
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s: %q by %s\n", mac, d.URL, d.Source)
	}
	// Output:
	// 001565aabbcc: "http://yealink.example.com/" by rule 1 (line 5)
	// 0004f2000001: "" by policy (unknown = observe)
}
