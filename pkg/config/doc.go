// Package config reads pnpd's TOML configuration file.
//
// Parse and Load decode the file into a raw form, reject unknown keys and bad
// values with an error that names the key and its line, and return a typed
// Config with defaults applied. The returned Config is the caller's; nothing
// in this package mutates it afterwards.
//
//	cfg, err := config.Load("/etc/pnpd/pnpd.toml")
//	if err != nil {
//		return err // e.g. `config: /etc/pnpd/pnpd.toml:12: resolve.rule[2].subnet: ...`
//	}
//	for _, w := range cfg.Warnings {
//		logger.Warn(w)
//	}
package config
