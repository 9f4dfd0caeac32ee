#!/usr/bin/env bash
# pnp-ops.sh: what `pnpd ctl` does, with the Asterisk CLI and a plain AMI
# session only; for operators whose scripts already speak to Asterisk.
#
#   pnp-ops.sh assign MAC TENANT      # or a whole URL instead of TENANT
#   pnp-ops.sh unassign MAC
#   pnp-ops.sh tenant-set NAME URL
#   pnp-ops.sh pending                # phones waiting for approval ([policy] unknown = "approve")
#   pnp-ops.sh approve MAC TENANT     # assign, and clear pending/<mac>
#   pnp-ops.sh window-open DURATION   # e.g. 30m, 2h, 90s ([policy] window = true)
#   pnp-ops.sh window-close
#   pnp-ops.sh rearm MAC              # [policy] once: answer the phone again
#   pnp-ops.sh reload                 # only the UserEvent
#
# The database changes go through `asterisk -rx` (run it where that works:
# root or the asterisk group). Every change is followed by the UserEvent
# PnpReload, sent over AMI, so that every pnpd of the site takes a new
# snapshot at once (else it does within [ami] refresh). AMI_USER and
# AMI_SECRET name a manager.conf user with write = user (the pnpd user of
# examples/manager.conf will do); AMI_HOST and AMI_PORT default to
# 127.0.0.1 and 5038; PNP_FAMILY to pnp.
set -euo pipefail

family=${PNP_FAMILY:-pnp}
ast=${ASTERISK:-asterisk}

die() { echo "pnp-ops.sh: $*" >&2; exit 2; }

# mac VALUE: the 12 lower-case hex digits pnpd reads keys as.
mac() {
	local m
	m=$(printf '%s' "$1" | tr -d ':.-' | tr 'A-F' 'a-f')
	[[ $m =~ ^[0-9a-f]{12}$ ]] || die "$1 is not a MAC address"
	printf '%s' "$m"
}

# db ARGS...: one `database` CLI command. `asterisk -rx` exits 0 whatever
# the command did, so success is read from Asterisk's answer.
db() {
	local out
	out=$("$ast" -rx "database $*")
	echo "$out"
	case $out in
	*"Updated database successfully"* | *"Database entry removed"*) ;;
	*) echo "pnp-ops.sh: Asterisk refused: database $*" >&2; return 1 ;;
	esac
}

# reload: log in over AMI, send PnpReload, log off; fails unless Asterisk
# answers "Response: Success" to both the login and the UserEvent.
reload() {
	: "${AMI_USER:?set AMI_USER and AMI_SECRET (a manager.conf user with write = user)}"
	: "${AMI_SECRET:?set AMI_SECRET}"
	local host=${AMI_HOST:-127.0.0.1} port=${AMI_PORT:-5038} reply
	exec 3<>"/dev/tcp/$host/$port" || die "cannot connect to AMI at $host:$port"
	printf 'Action: Login\r\nUsername: %s\r\nSecret: %s\r\n\r\n' "$AMI_USER" "$AMI_SECRET" >&3
	printf 'Action: UserEvent\r\nUserEvent: PnpReload\r\n\r\n' >&3
	printf 'Action: Logoff\r\n\r\n' >&3
	reply=$(timeout 5 cat <&3 || true)
	exec 3>&-
	[[ $(grep -c '^Response: Success' <<<"$reply") -ge 2 ]] ||
		die "AMI refused: $(grep -m1 '^Message:' <<<"$reply" || echo 'no answer')"
	echo "PnpReload sent"
}

# seconds DURATION: "30m", "2h", "90s" as seconds, at most 7 days.
seconds() {
	[[ $1 =~ ^([0-9]+)([smh])$ ]] || die "$1 is not a duration such as 30m, 2h or 90s"
	local n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
	case $unit in m) n=$((n * 60)) ;; h) n=$((n * 3600)) ;; esac
	((n > 0 && n <= 604800)) || die "$1: want more than 0 and at most 168h"
	printf '%s' "$n"
}

usage="assign MAC TENANT | unassign MAC | tenant-set NAME URL | pending | approve MAC TENANT | window-open DURATION | window-close | rearm MAC | reload"
[[ $# -ge 1 ]] || die "usage: pnp-ops.sh $usage"
case $1 in
assign)
	[[ $# -eq 3 ]] || die "usage: pnp-ops.sh assign MAC TENANT"
	m=$(mac "$2") || exit 2
	db put "$family" "mac/$m" "$3"
	reload ;;
unassign)
	[[ $# -eq 2 ]] || die "usage: pnp-ops.sh unassign MAC"
	m=$(mac "$2") || exit 2
	db del "$family" "mac/$m"
	reload ;;
tenant-set)
	[[ $# -eq 3 ]] || die "usage: pnp-ops.sh tenant-set NAME URL"
	[[ $2 != */* && $2 != *' '* ]] || die "$2 is not a tenant name (no '/', no spaces)"
	db put "$family" "tenant/$2/url" "$3"
	reload ;;
pending)
	[[ $# -eq 1 ]] || die "usage: pnp-ops.sh pending"
	"$ast" -rx "database show $family/pending" ;;
approve)
	[[ $# -eq 3 ]] || die "usage: pnp-ops.sh approve MAC TENANT"
	m=$(mac "$2") || exit 2
	db put "$family" "mac/$m" "$3"
	db del "$family" "pending/$m" || echo "pnp-ops.sh: $m was not pending; assigned anyway" >&2
	reload ;;
window-open)
	[[ $# -eq 2 ]] || die "usage: pnp-ops.sh window-open DURATION"
	s=$(seconds "$2") || exit 2
	until=$(date -u -d "@$(($(date +%s) + s))" +%Y-%m-%dT%H:%M:%SZ)
	db put "$family" window "$until"
	echo "provisioning window open until $until"
	reload ;;
window-close)
	[[ $# -eq 1 ]] || die "usage: pnp-ops.sh window-close"
	db del "$family" window
	reload ;;
rearm)
	[[ $# -eq 2 ]] || die "usage: pnp-ops.sh rearm MAC"
	m=$(mac "$2") || exit 2
	db del "$family" "provisioned/$m"
	reload ;;
reload)
	reload ;;
*)
	die "unknown command $1" ;;
esac
