module github.com/pnpd/pnpd

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/ivahaev/amigo v0.1.11 // indirect
	github.com/jart/gosip v0.0.0-20250608211422-1158f11cb31e // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
