// Package fail2ban reads, without running anything, what a host's fail2ban
// would do to phones that a PBX answers 401: whether it is installed and
// running, which enabled jails read Asterisk's log (the stock [asterisk]
// jail bans on "No matching endpoint found", which Asterisk logs for its
// 401 to every multicast SUBSCRIBE it sees), and which addresses those
// jails ignore.
//
// It reads the jail files in fail2ban's order (jail.conf, jail.d/*.conf,
// jail.local, jail.d/*.local). It does no %(name)s interpolation, follows
// no includes and resolves no host names in ignoreip.
package fail2ban
