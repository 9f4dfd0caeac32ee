package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/pnpd/pnpd/ami"
	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/pbx"
)

// loginTimeout bounds how long the one-shot commands (ctl, doctor,
// resolve) wait for the AMI login.
const loginTimeout = 5 * time.Second

// amiLink is a running AMI client.
type amiLink struct {
	c    *ami.Client
	stop context.CancelFunc
	done chan struct{}
}

// startAMI starts an AMI client for cfg; Close it.
func startAMI(cfg config.AMI, log *slog.Logger) *amiLink {
	c := ami.New(ami.Config{Address: cfg.Address, Username: cfg.Username, Secret: cfg.Secret, Logger: log})
	ctx, stop := context.WithCancel(context.Background())
	l := &amiLink{c: c, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		_ = c.Serve(ctx)
	}()
	return l
}

// login waits for the login, for the one-shot commands.
func (l *amiLink) login(ctx context.Context, cfg config.AMI) error {
	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	if err := l.c.WaitConnected(ctx); err != nil {
		return fmt.Errorf("ami %s@%s: %w", cfg.Username, cfg.Address, err)
	}
	return nil
}

// Close logs off and stops the client.
func (l *amiLink) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.c.Shutdown(ctx)
	l.stop()
	<-l.done
}

// runPBX runs the PBX view for cfg over l until stop is called; stop
// returns once its Serve has.
func runPBX(cfg *config.Config, l *amiLink, log *slog.Logger) (px *pbx.PBX, stop func()) {
	a := cfg.AMI
	px = pbx.New(pbx.Config{Client: l.c, Family: a.Family, Refresh: a.Refresh, Events: a.Events, Once: cfg.Policy.Once, Queue: a.WriteQueue, Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = px.Serve(ctx)
	}()
	return px, func() { cancel(); <-done }
}

// waitSnapshot waits up to d (or ctx) for px's first snapshot and reports
// whether it is in.
func waitSnapshot(ctx context.Context, px *pbx.PBX, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-px.Loaded():
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// pbxOnThisHost reports whether the AMI address names this host (a
// loopback address, "localhost", or an address of one of its interfaces):
// only then does the PBX's word on its SIP stack say anything about the
// port pnpd would take.
func pbxOnThisHost(address string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if mine, ok := netip.AddrFromSlice(n.IP); ok && mine.Unmap() == ip {
				return true
			}
		}
	}
	return false
}

// sendReload tells every pnpd of the site to take a new snapshot.
func sendReload(ctx context.Context, c *ami.Client) error {
	if err := c.UserEvent(ctx, pbx.EventReload); err != nil {
		return fmt.Errorf("UserEvent %s: %w", pbx.EventReload, err)
	}
	return nil
}

// errNoAMI is returned by the commands that need an [ami] section.
var errNoAMI = errors.New("the configuration has no [ami] section: pnpd does not know how to reach the PBX (see README, \"The PBX database\")")
