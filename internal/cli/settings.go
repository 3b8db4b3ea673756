package cli

import "strings"

// Where a setting comes from: the command line, the environment, or what
// was saved.

// pick returns flag if set, else the environment variable env.
func (a *app) pick(flag, env string) string {
	if flag != "" {
		return flag
	}
	return a.Getenv(env)
}

// truthy reports whether an environment value means "on".
func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
