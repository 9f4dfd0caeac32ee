module github.com/pnpd/pnpd

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/ivahaev/amigo v0.1.11
	github.com/jart/gosip v0.0.0-20250608211422-1158f11cb31e
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)
