package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/pnpd/pnpd/pkg/config"
	"github.com/pnpd/pnpd/pkg/netio"
	"github.com/pnpd/pnpd/pkg/pbx"
	"github.com/pnpd/pnpd/pkg/policy"
)

// newPolicy builds the [policy] of cfg over the PBX px (nil without
// [ami]): the token signer from its secret file, the kernel's neighbour
// table for neighbor_check.
func newPolicy(cfg *config.Config, px *pbx.PBX, log *slog.Logger) (*policy.Policy, error) {
	pc := policy.Config{Policy: cfg.Policy, Logger: log, Neighbor: kernelNeighbor}
	if px != nil {
		pc.State = px // never a nil *pbx.PBX in the interface
	}
	if f := cfg.Policy.TokenSecretFile; f != "" {
		secret, err := policy.ReadSecret(f)
		if err != nil {
			return nil, fmt.Errorf("[policy] token_secret_file: %w", err)
		}
		if w := policy.SecretFileWarning(f); w != "" {
			log.Warn("config", "warning", w)
		}
		if pc.Signer, err = policy.NewSigner(secret, cfg.Policy.TokenTTL); err != nil {
			return nil, fmt.Errorf("[policy] token_secret_file %s: %w", f, err)
		}
	}
	return policy.New(pc)
}

// kernelNeighbor is the policy's view of the kernel's neighbour table.
func kernelNeighbor(ctx context.Context, iface string, ip netip.Addr) (net.HardwareAddr, error) {
	return netio.WaitNeighbor(ctx, iface, ip, 0)
}

// policySummary writes the policy for the ready line.
func policySummary(p config.Policy) string {
	parts := []string{"unknown=" + p.Unknown, "source_rate=" + p.SourceRate.String(), "mac_rate=" + p.MACRate.String(),
		fmt.Sprintf("max_transactions=%d", p.MaxTransactions)}
	add := func(on bool, s string) {
		if on {
			parts = append(parts, s)
		}
	}
	add(!p.ContactIsSource, "contact_is_source=false")
	add(len(p.AllowMACs) > 0, fmt.Sprintf("allow_macs=%d", len(p.AllowMACs)))
	add(len(p.DenyMACs) > 0, fmt.Sprintf("deny_macs=%d", len(p.DenyMACs)))
	add(p.Window, "window")
	add(p.Once, "once")
	add(p.NeighborCheck, "neighbor_check")
	add(p.TokenSecretFile != "", "token")
	return strings.Join(parts, " ")
}
