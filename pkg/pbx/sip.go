package pbx

import (
	"context"
	"errors"
	"fmt"

	"github.com/pnpd/pnpd/ami"
)

// sipModules are the modules that give Asterisk a SIP stack: PJSIP, and
// the chan_sip of releases before 21.
var sipModules = []string{"res_pjsip.so", "chan_sip.so"}

// moduleNotLoaded is ModuleCheck's message for a module that is not loaded.
const moduleNotLoaded = "Module not loaded"

// SIPLoaded asks the PBX, with the AMI action ModuleCheck (write class
// system), whether a SIP stack is loaded. A SIP stack that is loaded may
// still have no transport on the group's port; one that is not loaded
// cannot take it.
func SIPLoaded(ctx context.Context, c *ami.Client) (bool, error) {
	for _, m := range sipModules {
		_, err := c.Action(ctx, "ModuleCheck", ami.Header{Key: "Module", Value: m})
		if err == nil {
			return true, nil
		}
		var ae *ami.Error
		if !errors.As(err, &ae) || ae.Message != moduleNotLoaded {
			return false, fmt.Errorf("pbx: is %s loaded: %w", m, err)
		}
	}
	return false, nil
}
