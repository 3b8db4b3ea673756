// Package layout states Coffer's import policy as a test, as Go's own
// go/build/deps_test.go does: which part of the tree may import which.
// ARCHITECTURE.md draws the same map; when the two disagree, this test is
// the one that is right.
//
// The parts, by path prefix:
//
//	public    client, storage (and its providers), token: what other modules import
//	device    internal/device/...    the device's side: key, format, repository, recovery client
//	protocol  internal/protocol/...  what both sides share: OPAQUE, key wrap, HPKE channel, fleet bundle, wire
//	server    internal/server/...    the vault fleet and the relay
//	joiner    cmd/..., internal/cli/..., internal/faultharness, internal/attack, bench/..., e2e:
//	          the only places that hold both sides (the coffer binary is also
//	          the vault server; the harness and benchmarks play clients
//	          against real fleets)
//	vectors   internal/cmd/vectors   an independent implementation of FORMAT.md: imports no Coffer package
//	base      any other internal/X   small single-job packages (atomic files, processes) anyone may use
//
// Test-support packages (name ending in "test", like net/http/httptest) are
// the only non-test packages that may import "testing", and only _test.go
// files may import them.
package layout

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/cofferhq/coffer"

// part is a named part of the tree.
type part string

const (
	public   part = "public"
	device   part = "device"
	protocol part = "protocol"
	server   part = "server"
	joiner   part = "joiner"
	vectors  part = "vectors"
	base     part = "base"
	external part = "" // the standard library and other modules
)

// partOf is the part a package (its path inside the module, "" for an
// outside import) belongs to.
func partOf(rel string) part {
	has := func(prefix string) bool { return rel == prefix || strings.HasPrefix(rel, prefix+"/") }
	switch {
	case rel == "":
		return external
	case has("internal/device"):
		return device
	case has("internal/protocol"):
		return protocol
	case has("internal/server"):
		return server
	case has("internal/cmd/vectors"):
		return vectors
	case has("cmd"), has("internal/cli"), has("internal/faultharness"), has("internal/attack"), has("bench"), has("e2e"):
		return joiner
	case has("internal"):
		return base
	case has("client"), has("storage"), has("token"):
		return public
	}
	return part("unknown:" + rel)
}

// allowed is the policy: the parts each part may import (besides itself,
// the standard library and other modules). Within public, storage and token
// stand alone; only client joins them to the device wing (see rulePublic).
var allowed = map[part][]part{
	public:   {device, protocol, base},
	device:   {protocol, public, base},
	protocol: {public, base},
	server:   {protocol, public, base},
	joiner:   {public, device, protocol, server, base, joiner},
	vectors:  {},
	base:     {},
}

// pkg is one package's imports as the policy sees them.
type pkg struct {
	rel     string          // path inside the module
	name    string          // package name (of its non-test files)
	imports map[string]bool // import paths of its non-test files
	tests   map[string]bool // import paths of its _test.go files
}

// violations lists every import of pkgs that breaks the policy, one line
// each, naming the importer, the import and the rule.
func violations(pkgs []pkg) []string {
	var out []string
	rel := func(imp string) string {
		if imp == module {
			return "."
		}
		return strings.TrimPrefix(imp, module+"/")
	}
	ours := func(imp string) bool { return imp == module || strings.HasPrefix(imp, module+"/") }
	isTestSupport := func(p string) bool { return strings.HasSuffix(path.Base(p), "test") }
	for _, p := range pkgs {
		from := partOf(p.rel)
		if strings.HasPrefix(string(from), "unknown:") {
			out = append(out, fmt.Sprintf("%s: belongs to no part of the layout; add it to a wing (internal/device, internal/protocol, internal/server) or to the policy", p.rel))
			continue
		}
		for _, imp := range sortedKeys(p.imports) {
			if imp == "testing" && !isTestSupport(p.rel) {
				out = append(out, fmt.Sprintf("%s imports testing outside its tests; only test-support packages (name ending in \"test\") may", p.rel))
			}
			if !ours(imp) {
				continue
			}
			to := partOf(rel(imp))
			if isTestSupport(rel(imp)) {
				out = append(out, fmt.Sprintf("%s imports %s: a test-support package, only for _test.go files", p.rel, rel(imp)))
				continue
			}
			if from == to && from != public {
				continue
			}
			if from == public {
				if msg := rulePublic(p.rel, rel(imp), to); msg != "" {
					out = append(out, fmt.Sprintf("%s imports %s: %s", p.rel, rel(imp), msg))
				}
				continue
			}
			if !slices.Contains(allowed[from], to) {
				out = append(out, fmt.Sprintf("%s imports %s: the %s part may not import the %s part", p.rel, rel(imp), from, to))
			}
		}
		// Tests may reach further (a client test runs against a real
		// fleet), but nothing imports a joiner and the independent
		// vectors stay independent.
		for _, imp := range sortedKeys(p.tests) {
			if !ours(imp) {
				continue
			}
			to := partOf(rel(imp))
			if from == vectors {
				out = append(out, fmt.Sprintf("%s (tests) imports %s: the independent implementation imports no Coffer package", p.rel, rel(imp)))
			}
			if to == joiner && from != joiner {
				out = append(out, fmt.Sprintf("%s (tests) imports %s: nothing outside cmd/, the CLI, the harness and bench imports them", p.rel, rel(imp)))
			}
		}
	}
	return out
}

// rulePublic is the policy inside the public part: storage and its
// providers import only storage packages (and base); token imports nothing
// of ours but base; client may use everything of the device side.
func rulePublic(from, imp string, to part) string {
	in := func(p, prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
	switch {
	case in(from, "storage"):
		if (to == public && in(imp, "storage")) || to == base {
			return ""
		}
		return "storage and its providers import only storage packages and base packages"
	case in(from, "token"):
		if to == base {
			return ""
		}
		return "token imports no other Coffer package"
	case in(from, "client"):
		if slices.Contains(allowed[public], to) || to == public {
			return ""
		}
		return fmt.Sprintf("the client API may not import the %s part", to)
	}
	return "unknown public package"
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// readTree parses the imports of every package of the module at root.
// Files of every build tag count: the policy holds on every platform.
func readTree(t *testing.T, root string) []pkg {
	t.Helper()
	byDir := map[string]*pkg{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); p != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir, _ := filepath.Rel(root, filepath.Dir(p))
		dir = filepath.ToSlash(dir)
		k := byDir[dir]
		if k == nil {
			k = &pkg{rel: dir, imports: map[string]bool{}, tests: map[string]bool{}}
			byDir[dir] = k
		}
		isTest := strings.HasSuffix(p, "_test.go")
		if !isTest {
			k.name = f.Name.Name
		}
		for _, s := range f.Imports {
			imp, _ := strconv.Unquote(s.Path.Value)
			if isTest {
				k.tests[imp] = true
			} else {
				k.imports[imp] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var pkgs []pkg
	for _, k := range byDir {
		if k.rel == "." {
			continue // no package at the module root
		}
		pkgs = append(pkgs, *k)
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].rel < pkgs[j].rel })
	return pkgs
}

// TestImportPolicy checks the whole module against the policy.
func TestImportPolicy(t *testing.T) {
	root := "../.."
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found from %s: %v", root, err)
	}
	pkgs := readTree(t, root)
	if len(pkgs) < 30 {
		t.Fatalf("read only %d packages: the walk is broken", len(pkgs))
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// TestPublicSurface pins the importable packages: a new public package is
// a decision, written in ARCHITECTURE.md, not an accident.
func TestPublicSurface(t *testing.T) {
	want := []string{
		"client",
		"storage", "storage/local", "storage/memory", "storage/rclone", "storage/rclone/rclonetest", "storage/retry", "storage/s3", "storage/s3/s3test", "storage/storagetest",
		"token",
	}
	var got []string
	for _, p := range readTree(t, "../..") {
		if partOf(p.rel) == public && p.name != "" {
			got = append(got, p.rel)
		}
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("public packages changed:\n got  %v\n want %v\nupdate ARCHITECTURE.md (and this list) if it is a decision", got, want)
	}
}

// TestPolicyCatchesViolations makes sure the checker is not a test that
// cannot fail: each wrong import below must be reported, naming it.
func TestPolicyCatchesViolations(t *testing.T) {
	imp := func(paths ...string) map[string]bool {
		m := map[string]bool{}
		for _, p := range paths {
			m[p] = true
		}
		return m
	}
	cases := []struct {
		p    pkg
		want string
	}{
		{pkg{rel: "internal/device/repository", imports: imp(module + "/internal/server/vault")}, "internal/device/repository imports internal/server/vault: the device part may not import the server part"},
		{pkg{rel: "internal/protocol/pake", imports: imp(module + "/internal/device/backupkey")}, "internal/protocol/pake imports internal/device/backupkey: the protocol part may not import the device part"},
		{pkg{rel: "internal/protocol/channel", imports: imp(module + "/internal/server/relay")}, "the protocol part may not import the server part"},
		{pkg{rel: "internal/server/vault", imports: imp(module + "/internal/device/recovery")}, "the server part may not import the device part"},
		{pkg{rel: "internal/server/vault", imports: imp(module + "/internal/cli")}, "the server part may not import the joiner part"},
		{pkg{rel: "client", imports: imp(module + "/internal/server/devfleet")}, "the client API may not import the server part"},
		{pkg{rel: "storage/s3", imports: imp(module + "/internal/device/container")}, "storage and its providers import only storage packages"},
		{pkg{rel: "token", imports: imp(module + "/storage")}, "token imports no other Coffer package"},
		{pkg{rel: "internal/server/vault", imports: imp("testing")}, "internal/server/vault imports testing outside its tests"},
		{pkg{rel: "internal/server/replica", imports: imp(module + "/internal/server/sealing/pkcs11/softhsmtest")}, "a test-support package, only for _test.go files"},
		{pkg{rel: "internal/cmd/vectors", tests: imp(module + "/internal/device/container")}, "the independent implementation imports no Coffer package"},
		{pkg{rel: "internal/atomicfile", imports: imp(module + "/internal/device/devicestate")}, "the base part may not import the device part"},
		{pkg{rel: "vault", imports: imp("fmt")}, "belongs to no part of the layout"},
	}
	for _, c := range cases {
		got := violations([]pkg{c.p})
		if len(got) != 1 || !strings.Contains(got[0], c.want) {
			t.Errorf("%s importing %v: got %q, want one violation containing %q", c.p.rel, sortedKeys(c.p.imports), got, c.want)
		}
	}
	// And the allowed shapes pass.
	ok := []pkg{
		{rel: "internal/device/recovery", imports: imp(module+"/internal/protocol/pake", module+"/token", "fmt")},
		{rel: "internal/server/vault", imports: imp(module + "/internal/protocol/wire")},
		{rel: "client", imports: imp(module+"/internal/device/repository", module+"/storage")},
		{rel: "client", tests: imp(module + "/internal/server/devfleet")},
		{rel: "internal/cli", imports: imp(module+"/internal/server/vault", module+"/internal/device/repository")},
		{rel: "storage/s3/s3test", imports: imp("testing", module+"/storage")},
		{rel: "internal/server/replica", tests: imp(module + "/internal/server/sealing/pkcs11/softhsmtest")},
	}
	for _, p := range ok {
		if got := violations([]pkg{p}); len(got) != 0 {
			t.Errorf("%s: unexpected violations %q", p.rel, got)
		}
	}
}
