// Package asterisktest starts a real Asterisk for tests: a private instance
// per call of Start, with its own configuration, AstDB, logs, control socket
// and AMI port, and stops it and removes all of it when the test ends.
//
// Asterisk comes from a Debian sid root that scripts/asterisk-root prepares
// (at $PNPD_ASTERISK_ROOT, default /var/cache/pnpd/asterisk-root). It runs
// without chroot and without root rights: sid's own dynamic loader starts
// the root's asterisk binary with the root's libraries, and the instance's
// asterisk.conf points at the root's modules and data (read-only, shared by
// every instance) and at the instance's directory for everything written.
// When the root is missing, the tests that need it skip, or fail under
// CI=true (netnstest.SkipOrFail).
//
// An instance's directory (Instance.Dir, a short directory under the
// temporary directory, so that the control socket's path fits a unix socket
// address) holds:
//
//	etc/    asterisk.conf, modules.conf, manager.conf, logger.conf, ...
//	run/    asterisk.ctl (the CLI's control socket), asterisk.pid
//	log/    messages.log (Instance.Log), stdio.log (Asterisk's stdout and stderr)
//	db/     astdb.sqlite3, kept across Kill/Stop and Start
//	lib/ spool/ cache/
//
// Only the modules the tests ask for are loaded (modules.conf autoload=no):
// pbx_config, func_db and app_userevent always; the PJSIP stack when
// Options.PJSIP is set; Options.Modules on top. AMI (with the DB*,
// UserEvent, Command and Ping actions) is part of the core.
//
// With Options.NS, Asterisk runs inside that network namespace (its AMI on
// 127.0.0.1 there: use Instance.Dial); the CLI reaches it through its
// control socket, which a namespace does not hide.
package asterisktest
