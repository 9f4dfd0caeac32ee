// Package asterisk starts a real Asterisk for pnpd's tests and for
// `pnpd bench`: a private instance per call of Start, with its own
// configuration, AstDB, logs, control socket and AMI port, stopped and
// removed by Close. Package asterisktest wraps it for tests (skip when no
// Asterisk is prepared, stop when the test ends).
//
// Asterisk comes from a Debian sid root that scripts/asterisk-root prepares
// (at $PNPD_ASTERISK_ROOT, default /var/cache/pnpd/asterisk-root; FindRoot
// says whether it is there). It runs without chroot and without root
// rights: sid's own dynamic loader starts the root's asterisk binary with
// the root's libraries, and the instance's asterisk.conf points at the
// root's modules and data (read-only, shared by every instance) and at the
// instance's directory for everything written.
//
//	a, err := asterisk.Start(ctx, asterisk.Options{NS: ns, PJSIP: conf})
//	if err != nil {
//		return err // a failed start ends with the tails of Asterisk's output and log
//	}
//	defer a.Close()
//	out, err := a.CLI(ctx, "pjsip show endpoints")
//
// An instance's directory (Instance.Dir, a short directory under the
// temporary directory, so that the control socket's path fits a unix socket
// address) holds:
//
//	etc/    asterisk.conf, modules.conf, manager.conf, logger.conf, ...
//	run/    asterisk.ctl (the CLI's control socket), asterisk.pid
//	log/    messages.log (Instance.Log), stdio.log (Instance.Stdio: Asterisk's stdout and stderr)
//	db/     astdb.sqlite3, kept across Kill/Stop and Restart
//	lib/ spool/ cache/
//
// Only the modules asked for are loaded (modules.conf autoload=no):
// pbx_config, func_db and app_userevent always; the PJSIP stack when
// Options.PJSIP is set; Options.Modules on top. AMI (with the DB*,
// UserEvent, Command and Ping actions) is part of the core.
//
// With Options.NS, Asterisk runs inside that network namespace (its AMI on
// 127.0.0.1 there: use Instance.Dial); the CLI reaches it through its
// control socket, which a namespace does not hide. Entering a namespace
// needs root; without it Start fails with netns.ErrUnavailable.
package asterisk
