// Package ami implements pnpd's client of the Asterisk Manager Interface
// (AMI), over github.com/ivahaev/amigo v0.1.11.
//
// A Client keeps one AMI session up: Serve connects, logs in, reconnects
// with a backoff that doubles from Config.MinBackoff to Config.MaxBackoff
// (to Config.MaxLoginBackoff, 60 s by default, while Asterisk refuses the
// login; and starts over after a successful login), and logs off when its context
// ends or Shutdown is called. Calls take a context and return real errors:
//
//   - the context's error, wrapped ("ami: DBGet: context deadline
//     exceeded"), as soon as the context ends, even while amigo still waits
//     for the answer (the answer, when it comes, is dropped);
//   - ErrTimeout when Asterisk never answers, even without a deadline;
//   - *Error for Asterisk's "Response: Error", with its Message; AstDB
//     misses match ErrNotFound;
//   - ErrNotConnected while no session is up (a call whose connection drops
//     under it too: the action may or may not have been carried out),
//     ErrClosed after Shutdown;
//   - ErrInvalidValue, before anything is sent, for CR, LF or NUL in a
//     value (values come from SIP packets: header injection) or a bad
//     header name.
//
// List actions (DBGet, DBGetTree, or any other through List) are gathered
// by ActionID up to their "...Complete" event; events of other actions and
// of other sessions are kept apart. Events are delivered by name to
// Subscribe channels, never waited for. Status, WaitConnected and
// Config.OnState tell the connection's state.
//
// Usage:
//
//	c := ami.New(ami.Config{Address: "127.0.0.1:5038", Username: "pnpd", Secret: secret, Logger: log})
//	go c.Serve(ctx)
//	defer c.Shutdown(context.Background())
//	if err := c.WaitConnected(ctx); err != nil {
//		return err // "ami: Login: Authentication failed (context deadline exceeded)"
//	}
//	tenant, err := c.DBGet(ctx, "pnp", "mac/001fc11b4e1c")
//	if errors.Is(err, ami.ErrNotFound) { ... }
//	entries, err := c.DBGetTree(ctx, "pnp", "mac") // Key "mac/001fc11b4e1c"
//	events, cancel := c.Subscribe("UserEvent", 64)
//
// # What amigo does, and what reaches callers
//
// Hidden from callers:
//
//   - amigo.New writes its defaults (admin/amp111, 127.0.0.1:5038) into the
//     Settings it gets: each connection gets a private Settings with every
//     field set, Config is never changed, and an empty Username or Secret
//     is a configuration error rather than a login as admin/amp111.
//   - amigo's Close panics before Connect, prints "STOPPED" and leaks a
//     goroutine on a live connection, and races with amigo's own
//     reconnect loop: one amigo instance per connection attempt, never
//     left to reconnect, closed only at points where that is safe (see
//     conn.go), a live session ended by Logoff. The backoff is ours.
//   - Every message, action responses included, passes through amigo's
//     event channel; a slow reader stalls Action, and Asterisk drops a
//     session that does not read in time (100 ms). One goroutine drains it
//     and never blocks: it routes by ActionID (chosen by us, with a
//     per-client prefix, registered before the action is sent) and hands
//     events to subscribers without waiting (a full subscriber loses the
//     event, counted in Dropped).
//   - amigo's Action returns {"Error": "Timeout"} with a nil error: that is
//     ErrTimeout here. It runs one action at a time under a mutex and
//     mutates the map it gets: calls go through a sender goroutine, one at
//     a time, each with a fresh map, and a call whose context ended before
//     its turn is not sent at all.
//   - amigo's "connect" event comes before it counts itself connected, and
//     its dial-error event leaves the error out: the client waits for
//     Connected(), and dials once itself to name the error ("dial tcp
//     127.0.0.1:5038: connect: connection refused").
//   - amigo's own keys ("#", "TimeReceived", "AmigoConnID") are removed
//     from Event.Fields.
//
// What cannot be hidden:
//
//   - Events that Asterisk sends in the same TCP read as the login response
//     are lost (FullyBooted always is). After each login (Status.Logins
//     grows, OnState reports Connected) resync whatever state events keep
//     current.
//   - amigo runs one action at a time per session: concurrent calls wait
//     for each other's round trips (their event lists overlap freely). An
//     action Asterisk never answers holds the session's later actions for
//     amigo's timeout (10 s).
//   - Command returns only the first and the last line of a command's
//     output (amigo keeps no other Output line). Of repeated headers of a
//     message only the last is kept; an action cannot send a header twice.
//   - Asterisk drops leading spaces and tabs of a header value (so does
//     every AMI client): DBPut of " x" stores "x".
//   - amigo hands each message through three goroutines: against a real
//     Asterisk 22 a DBGet round trip costs about 75-90 µs with amigo, where
//     a bare socket takes 20-55 µs (this package adds under 5 µs to amigo).
//   - amigo reads the banner and the login response without a deadline: a
//     server that accepts and never answers holds the attempt (Shutdown
//     then gives up on it after its context; it ends itself if the server
//     ever answers or closes). amigo sleeps up to its reconnect interval
//     (250 ms) before its goroutine notices Close, so Shutdown waits that
//     long after a lost connection. A call made at the very instant a
//     connection drops can leave one goroutine blocked inside amigo for
//     good (it sends on a channel whose reader has gone); Shutdown gives up
//     waiting for it after amigo's action timeout.
//
// The package has nothing specific to the scripted server of package
// amitest, which the tests use: the same client runs against Asterisk.
package ami
