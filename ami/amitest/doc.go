// Package amitest implements a scripted Asterisk Manager Interface server for
// tests: it listens on 127.0.0.1, greets with Asterisk's banner, checks a
// login, and answers the actions pnpd uses out of an in-memory AstDB, in the
// message shapes Asterisk 22 sends (measured against a real Asterisk 22.10):
//
//	Login       Success "Authentication accepted" (then Event: FullyBooted in
//	            the same write, as Asterisk does), or Error
//	            "Authentication failed" and the connection closed
//	DBGet       Success "Result will follow" (EventList: start), one
//	            DBGetResponse (Family, Key, Val), DBGetComplete (ListItems: 1);
//	            or Error "Database entry not found"
//	DBGetTree   Success (EventList: start), one DBGetTreeResponse per entry
//	            (Key: /family/key, Val), DBGetTreeComplete (ListItems: N);
//	            Family and Key optional, matched as Asterisk's SQL does (whole
//	            path components, ASCII case-insensitive)
//	DBPut, DBDel ("Database entry could not be deleted"), DBDelTree
//	            ("Database entry not found" when nothing was deleted)
//	UserEvent   Success "Event Sent", then Event: UserEvent to every logged-in
//	            session (the sender too) with every header of the action but
//	            Action and UserEvent, ActionID included
//	Getvar, Ping, Command (SetCommand), Logoff (Goodbye, then close)
//
// Any other action gets Asterisk's "Invalid/unknown command" error, and any
// action before a login "Permission denied". Header names are matched
// case-insensitively, as Asterisk does.
//
// Hooks for tests: Handle overrides one action (Builtin runs the built-in
// answer from inside an override), DropAll closes every session, Refuse and
// Accept close and reopen the listener on the same port, SetDelay delays every
// answer, Broadcast sends an event to every session, and Connections,
// LoginAttempts, Logins, Sessions and Received count what happened.
//
// Usage:
//
//	srv := amitest.New(t, amitest.Options{Username: "pnpd", Secret: "s3cret"})
//	srv.DBPut("pnp", "mac/001fc11b4e1c", "acme")
//	// connect a client to srv.Addr()
package amitest
