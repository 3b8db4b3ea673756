package cli

import (
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// Where a setting comes from. Every command resolves its settings the one
// way, through setting (and boolSetting, overrideString, overrideBool,
// given), and the first of these places that has one wins:
//
//  1. the flag, if it was given on the command line: even given empty
//     (--relay=), it counts as given and hides the environment variable;
//  2. the environment variable, if it is set and not empty: a variable
//     set to "" counts as unset;
//  3. the value saved: the device's vault settings (applied by the caller
//     with client.VaultSettings.Merge, which fills what is still empty),
//     the replica's --config file (overrideString leaves it in place),
//     the device's repository (client.Device.Open, when --repo is empty);
//  4. the flag's default.
//
// Flags that have no environment variable and no saved value are read
// from the variables they are bound to.

// origin is where lookup found a setting.
type origin int

const (
	fromDefault origin = iota // not given: the flag's default ("" without a flag)
	fromFlag                  // on the command line
	fromEnv                   // in the environment
)

// lookup resolves the setting named by flag (a flag of cmd, or "" for
// none) and env (an environment variable, or "" for none): steps 1, 2
// and 4 above. A flag cmd does not have is a mistake in this package, and
// panics.
func (a *app) lookup(cmd *cobra.Command, flag, env string) (string, origin) {
	def := ""
	if flag != "" {
		f := cmd.Flags().Lookup(flag)
		if f == nil {
			panic("cli: " + cmd.CommandPath() + " has no flag --" + flag)
		}
		if f.Changed {
			return f.Value.String(), fromFlag
		}
		def = f.Value.String()
	}
	if env != "" {
		if v := a.Getenv(env); v != "" {
			return v, fromEnv
		}
	}
	return def, fromDefault
}

// setting returns the value of a string setting: the flag's if it was
// given, else the environment variable's if set, else the flag's default;
// given reports whether it came from the command line or the environment
// (if not, the caller may use a saved value instead).
func (a *app) setting(cmd *cobra.Command, flag, env string) (v string, given bool) {
	v, o := a.lookup(cmd, flag, env)
	return v, o != fromDefault
}

// boolSetting is setting for a boolean flag. The environment variable
// means true if it is 1, true, yes or on (any case), and false otherwise.
func (a *app) boolSetting(cmd *cobra.Command, flag, env string) (v bool, given bool) {
	s, o := a.lookup(cmd, flag, env)
	if o == fromEnv {
		return truthy(s), true
	}
	b, _ := strconv.ParseBool(s) // a bool flag's value prints as true or false
	return b, o != fromDefault
}

// overrideString sets *saved to the setting if it was given on the
// command line or in the environment; otherwise *saved keeps the value
// saved (or "").
func (a *app) overrideString(saved *string, cmd *cobra.Command, flag, env string) {
	if v, ok := a.setting(cmd, flag, env); ok {
		*saved = v
	}
}

// overrideBool is overrideString for a boolean setting.
func (a *app) overrideBool(saved *bool, cmd *cobra.Command, flag, env string) {
	if v, ok := a.boolSetting(cmd, flag, env); ok {
		*saved = v
	}
}

// given reports whether any of the flags was given on the command line:
// step 1 alone, for flags with no environment variable whose values are
// not strings (read them from their bound variables).
func (a *app) given(cmd *cobra.Command, flags ...string) bool {
	for _, f := range flags {
		if _, o := a.lookup(cmd, f, ""); o == fromFlag {
			return true
		}
	}
	return false
}

// truthy reports whether an environment value means "on".
func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// splitList splits a comma-separated list setting, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
