// Package asterisktest starts a real Asterisk for tests: package asterisk's
// instance, stopped and removed when the test ends, with methods that fail
// the test instead of returning errors.
//
//	a := asterisktest.Start(t, asterisktest.Options{PJSIP: conf})
//	a.CLI(t, "database put pnp mac/001fc11b4e1c acme")
//	a.Kill(t)
//	a.Start(t) // same directory, AMI port and AstDB
//
// Asterisk comes from the Debian sid root that scripts/asterisk-root
// prepares (at $PNPD_ASTERISK_ROOT, default /var/cache/pnpd/asterisk-root).
// When the root is missing, the tests that need it skip, or fail under
// CI=true (netnstest.SkipOrFail); so do those that ask for Options.NS
// without the rights to enter a namespace (netnstest.Require). When a test
// fails, the tails of its instances' logs go to the test's log. What an
// instance's directory holds and which modules it loads: see package
// asterisk.
package asterisktest
