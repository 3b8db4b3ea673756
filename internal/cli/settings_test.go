package cli

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

// settingsApp returns an app whose environment is env, and a command with
// the flags --s (default "dflt"), --b (a bool) and the vault and key flags,
// parsed from args.
func settingsApp(t *testing.T, env map[string]string, args ...string) (*app, *cobra.Command) {
	t.Helper()
	var out bytes.Buffer
	a := &app{Env: Env{Stdout: &out, Stderr: &out, Getenv: func(k string) string { return env[k] }}}
	cmd := &cobra.Command{Use: "t"}
	cmd.Flags().String("s", "dflt", "")
	cmd.Flags().Bool("b", false, "")
	addVaultFlags(cmd)
	addKeyFlags(cmd)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return a, cmd
}

// TestSetting: the flag beats the environment beats the saved value beats
// the default; an environment variable set to "" is unset; a flag given
// empty is given.
func TestSetting(t *testing.T) {
	for _, c := range []struct {
		name  string
		env   map[string]string
		args  []string
		want  string
		given bool
		saved string // after overrideString over "saved"
	}{
		{"default", nil, nil, "dflt", false, "saved"},
		{"env", map[string]string{"S": "env"}, nil, "env", true, "env"},
		{"empty env is unset", map[string]string{"S": ""}, nil, "dflt", false, "saved"},
		{"flag beats env", map[string]string{"S": "env"}, []string{"--s", "flag"}, "flag", true, "flag"},
		{"empty flag is given", map[string]string{"S": "env"}, []string{"--s="}, "", true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, cmd := settingsApp(t, c.env, c.args...)
			v, given := a.setting(cmd, "s", "S")
			if v != c.want || given != c.given {
				t.Errorf("setting = %q, %v; want %q, %v", v, given, c.want, c.given)
			}
			saved := "saved"
			a.overrideString(&saved, cmd, "s", "S")
			if saved != c.saved {
				t.Errorf("overrideString: %q, want %q", saved, c.saved)
			}
			if got := a.given(cmd, "s"); got != (len(c.args) > 0) {
				t.Errorf("given = %v", got)
			}
		})
	}
	// No flag: the environment alone; no environment variable: the flag alone.
	a, cmd := settingsApp(t, map[string]string{"S": "env"}, "--s", "flag")
	if v, given := a.setting(cmd, "", "S"); v != "env" || !given {
		t.Errorf("environment only: %q %v", v, given)
	}
	if v, given := a.setting(cmd, "s", ""); v != "flag" || !given {
		t.Errorf("flag only: %q %v", v, given)
	}
	a, cmd = settingsApp(t, map[string]string{"S": "env"})
	if v, given := a.setting(cmd, "s", ""); v != "dflt" || given {
		t.Errorf("flag only, not given: %q %v", v, given)
	}
}

func TestBoolSetting(t *testing.T) {
	for _, c := range []struct {
		name        string
		env         string
		args        []string
		want, given bool
	}{
		{"default", "", nil, false, false},
		{"env 1", "1", nil, true, true},
		{"env yes", " YES ", nil, true, true},
		{"env 0", "0", nil, false, true},
		{"flag", "", []string{"--b"}, true, true},
		{"flag false beats env", "1", []string{"--b=false"}, false, true},
	} {
		a, cmd := settingsApp(t, map[string]string{"B": c.env}, c.args...)
		v, given := a.boolSetting(cmd, "b", "B")
		if v != c.want || given != c.given {
			t.Errorf("%s: boolSetting = %v, %v; want %v, %v", c.name, v, given, c.want, c.given)
		}
		saved := true
		a.overrideBool(&saved, cmd, "b", "B")
		if want := c.want || !c.given; saved != want {
			t.Errorf("%s: overrideBool over true: %v", c.name, saved)
		}
	}
}

func TestSettingUnknownFlagPanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "--nope") {
			t.Errorf("recovered %v", r)
		}
	}()
	a, cmd := settingsApp(t, nil)
	a.setting(cmd, "nope", "")
}

// TestVaultSettings: flag, then environment, then the device's saved
// settings (Merge); the token is never saved; --insecure-dev-ksf or
// COFFER_DEV_KSF.
func TestVaultSettings(t *testing.T) {
	saved := &client.SavedVault{Relay: "https://saved", Account: "saved", Fleet: "/saved/bundle.json", FleetRoot: "coffer-fleet-root:saved"}
	env := map[string]string{"COFFER_RELAY": "https://env", "COFFER_ACCOUNT": "env", "COFFER_TOKEN": " tok \n", "COFFER_FLEET": "", "COFFER_DEV_KSF": "1"}
	a, cmd := settingsApp(t, env, "--relay", "https://flag")
	s := a.vaultSettings(cmd).Merge(saved)
	if s.Relay != "https://flag" || s.Account != "env" || s.Token != "tok" || s.Fleet != "/saved/bundle.json" || s.FleetRoot != "coffer-fleet-root:saved" || !s.InsecureDevKSF {
		t.Errorf("settings: %+v", s)
	}
	// A flag given empty hides the environment; Merge fills what is empty.
	a, cmd = settingsApp(t, env, "--account=", "--insecure-dev-ksf=false")
	s = a.vaultSettings(cmd).Merge(saved)
	if s.Relay != "https://env" || s.Account != "saved" || s.InsecureDevKSF {
		t.Errorf("settings: %+v", s)
	}
	if s := a.vaultSettings(cmd).Merge(nil); s.Account != "" {
		t.Errorf("nothing saved: %+v", s)
	}
}

// TestKeySetting: --key or --key-file (not both), else COFFER_KEY, else
// none (the device's own).
func TestKeySetting(t *testing.T) {
	fileKey, envKey, flagKey := client.NewKey(), client.NewKey(), client.NewKey()
	file := filepath.Join(t.TempDir(), "key")
	if err := client.WriteKeyFile(file, fileKey); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"COFFER_KEY": envKey.Digits()}
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
		want *client.Key
	}{
		{"none", nil, nil, nil},
		{"empty env", map[string]string{"COFFER_KEY": ""}, nil, nil},
		{"env", env, nil, envKey},
		{"file beats env", env, []string{"--key-file", file}, fileKey},
		{"key beats env", env, []string{"--key", flagKey.Digits()}, flagKey},
	} {
		a, cmd := settingsApp(t, c.env, c.args...)
		a.quiet = true
		k, err := a.key(cmd)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if (k == nil) != (c.want == nil) || k != nil && k.Digits() != c.want.Digits() {
			t.Errorf("%s: the wrong key", c.name)
		}
	}
	a, cmd := settingsApp(t, nil, "--key", flagKey.Digits(), "--key-file", file)
	if _, err := a.key(cmd); ExitCode(err) != ExitUsage {
		t.Errorf("--key and --key-file: %v", err)
	}
	a, cmd = settingsApp(t, env, "--key=")
	if _, err := a.key(cmd); ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "--key") {
		t.Errorf("--key given empty: %v", err)
	}
	if !a.keyGiven(cmd) {
		t.Error("keyGiven: --key= was given")
	}
}
