package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/server/devfleet"
)

func (a *app) demoCommand() *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Show the whole story on a throwaway local repository",
		Long: `Demo makes sample data (a chat database and a media folder) in a temporary
directory, sets up backups with a fresh 64-digit key to a local directory
repository, backs up twice, restores on a "new device" with only the
repository and the key, compares the trees, and shows a tampered backup and
a wrong key being refused. Then it tells the password story: it starts a
development vault fleet and relay on 127.0.0.1, sets backups up with a
password, "loses" the phone, and restores on a new one with the password
after a wrong guess. It uses no network beyond 127.0.0.1 and removes
everything it made at the end (unless --keep).`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fail("demo", runDemo(cmd.Context(), a.out(), keep))
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the demo's temporary directory")
	return cmd
}

// demo narrates the steps.
type demo struct {
	w    io.Writer
	step int
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.w, "%2d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func (d *demo) more(format string, args ...any) {
	if format == "" {
		fmt.Fprintln(d.w)
		return
	}
	fmt.Fprintf(d.w, "    %s\n", fmt.Sprintf(format, args...))
}

func runDemo(ctx context.Context, w io.Writer, keep bool) (err error) {
	start := time.Now()
	tmp, err := os.MkdirTemp("", "coffer-demo-")
	if err != nil {
		return err
	}
	defer func() {
		if keep {
			fmt.Fprintf(w, "Kept everything in %s.\n", tmp)
			return
		}
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = rerr
		}
	}()
	d := &demo{w: w}
	fmt.Fprintf(w, "Coffer demo: everything happens in %s and is removed at the end (--keep keeps it).\n\n", tmp)

	// 1. Sample data.
	data := filepath.Join(tmp, "phone", "chats")
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	chatSize, err := writeChatDB(filepath.Join(data, "msgstore.db"), rng, 3<<20)
	if err != nil {
		return err
	}
	nMedia, mediaSize, err := writeMedia(filepath.Join(data, "Media"), rng)
	if err != nil {
		return err
	}
	if err := os.Symlink("Media/2025-06/IMG_0003.jpg", filepath.Join(data, "wallpaper.jpg")); err != nil {
		return err
	}
	d.say("Made sample data in %s: a chat database (msgstore.db, %s) and Media/ (%d files in nested folders, %s), plus a symbolic link.",
		rel(tmp, data), size(chatSize), nMedia, size(mediaSize))

	// 2. Set up.
	repoURL := filepath.Join(tmp, "repo")
	dev := client.NewDevice(filepath.Join(tmp, "phone", "coffer-state"))
	res, err := dev.Init(ctx, repoURL)
	if err != nil {
		return err
	}
	digits := res.Key.Digits()
	res.Key.Zero()
	d.say("Set up backups to a local repository (%s) with a fresh 64-digit key:", rel(tmp, repoURL))
	d.more("")
	d.more("    %s", digits)
	d.more("")
	d.more("Nobody can recover this key; it is the only way to restore on a new device.")

	// 3. First backup.
	r, err := dev.Open(ctx, client.OpenOptions{})
	if err != nil {
		return err
	}
	defer r.Close()
	s1, err := r.Backup(ctx, []string{data}, client.BackupOptions{Version: version()})
	if err != nil {
		return err
	}
	d.say("Backup %d: %d files, %s read; %d pieces encrypted and uploaded (%s stored) in %s.",
		s1.Generation.Number, s1.Generation.Files, size(s1.NewBytes), s1.NewPieces, size(s1.StoredBytes), seconds(s1.Duration))
	before, err := objectSet(repoURL)
	if err != nil {
		return err
	}

	// 4. Change a few things and back up again.
	if err := appendChats(filepath.Join(data, "msgstore.db"), rng, 200); err != nil {
		return err
	}
	if err := writeRandom(filepath.Join(data, "Media", "2025-07", "IMG_0100.jpg"), rng, 700<<10); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(data, "Media", "2025-05", "VID_0002.mp4")); err != nil {
		return err
	}
	d.say("Changed things: 200 new chat messages, one new photo, one video deleted.")
	s2, err := r.Backup(ctx, []string{data}, client.BackupOptions{Version: version()})
	if err != nil {
		return err
	}
	d.say("Backup %d: %d files; only %d new pieces uploaded (%s), %d reused; %d unchanged files not even read (%s).",
		s2.Generation.Number, s2.Generation.Files, s2.NewPieces, size(s2.NewBytes), s2.ReusedPieces, s2.UnchangedFiles, seconds(s2.Duration))
	after, err := objectSet(repoURL)
	if err != nil {
		return err
	}

	// 5. Restore on a new device: only the repository URL and the key.
	key, err := client.ParseKey(digits)
	if err != nil {
		return err
	}
	defer key.Zero()
	laptop := filepath.Join(tmp, "new-laptop")
	nr, err := client.Open(ctx, repoURL, key)
	if err != nil {
		return err
	}
	defer nr.Close()
	target := filepath.Join(laptop, "restored")
	rs, err := nr.Restore(ctx, 0, target, client.RestoreOptions{})
	if err != nil {
		return err
	}
	d.say("New device: restored backup %d with only the repository and the typed-in key into %s (%d files, %s, %s).",
		rs.Generation.Number, rel(tmp, target), rs.Files, size(rs.Bytes), seconds(rs.Duration))
	n, err := compareTrees(data, filepath.Join(target, filepath.Base(data)))
	if err != nil {
		return fmt.Errorf("the restored tree differs from the original: %w", err)
	}
	d.say("Compared the trees: all %d entries identical (every file's bytes, every mode, the link).", n)

	// 6. Tamper with a stored object.
	victim, off, err := flipOneByte(repoURL, newest(before, after))
	if err != nil {
		return err
	}
	target2 := filepath.Join(laptop, "restored-again")
	_, err = nr.Restore(ctx, 0, target2, client.RestoreOptions{})
	if err == nil {
		return errors.New("the restore of a tampered backup was not refused")
	}
	if ExitCode(fail("restore", err)) != ExitIntegrity {
		return fmt.Errorf("the restore of a tampered backup failed, but not as an integrity failure: %w", err)
	}
	d.say("Flipped one bit of byte %d of the stored object %s. The restore is refused:", off, shortName(victim))
	d.more("coffer: %s", message(fail("restore", err)))
	if _, serr := os.Lstat(target2); serr == nil {
		return fmt.Errorf("the refused restore left %s behind", target2)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(laptop, ".coffer-restore-*")); len(leftovers) > 0 {
		return fmt.Errorf("the refused restore left %s behind", leftovers[0])
	}
	d.more("Exit code %d (integrity failure); nothing was written to %s.", ExitIntegrity, rel(tmp, target2))

	// 7. A wrong key.
	wrong := client.NewKey()
	defer wrong.Zero()
	_, err = client.Open(ctx, repoURL, wrong)
	if err == nil {
		return errors.New("a wrong key was accepted")
	}
	if ExitCode(fail("restore", err)) != ExitWrongKey {
		return fmt.Errorf("a wrong key failed, but not as a wrong key: %w", err)
	}
	d.say("A different 64-digit key is refused at once, as a wrong key (not as corruption):")
	d.more("coffer: %s", message(fail("restore", err)))
	d.more("Exit code %d (wrong password or key).", ExitWrongKey)

	if err := passwordDemo(ctx, d, tmp, data); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nDone in %.1f s.\n", time.Since(start).Seconds())
	return nil
}

// passwordDemo tells the password story: a development vault fleet on
// 127.0.0.1, backups whose key the vault keeps under a password, a lost
// phone, a wrong guess and the right password on a new one.
func passwordDemo(ctx context.Context, d *demo, tmp, data string) error {
	fmt.Fprintf(d.w, "\nPassword recovery: no key to keep, only a password.\n\n")
	fleetDir := filepath.Join(tmp, "vault")
	f, err := devfleet.Start(ctx, devfleet.Options{Dir: fleetDir, Replicas: 3})
	if err != nil {
		return fmt.Errorf("starting the development vault: %w", err)
	}
	defer f.Close()
	const account = "ana@example.com"
	tok, err := f.Token(account, 15*time.Minute)
	if err != nil {
		return err
	}
	vtok, err := f.VaultToken(account, 15*time.Minute)
	if err != nil {
		return err
	}
	vs, err := client.VaultSettings{
		Relay: f.RelayURL, Account: account, Token: tok, VaultToken: vtok, Fleet: f.BundlePath, FleetRoot: f.RootPublic,
		InsecureDevKSF: true,
	}.Load()
	if err != nil {
		return err
	}
	d.say("Started a vault fleet (the key ceremony, three Raft replicas, a relay) on 127.0.0.1 in %s.", rel(tmp, fleetDir))
	k := pake.DefaultKSF
	d.more("(demo uses cheap key stretching so it runs in seconds; real use: Argon2id, t=%d,", k.Time)
	d.more("%d MiB, %d lanes for every guess, as measured in pake/README.md.)", k.MemoryKiB/1024, k.Threads)

	password := []byte("correct horse battery staple")
	repoURL := filepath.Join(tmp, "repo-password")
	phone := client.NewDevice(filepath.Join(tmp, "phone2", "coffer-state"))
	res, err := phone.InitWithPassword(ctx, repoURL, password, vs)
	if err != nil {
		return err
	}
	res.Key.Zero()
	d.say("A phone sets up backups to %s with a password: the new backup key goes to the vault", rel(tmp, repoURL))
	d.more("wrapped under a key only the password derives (OPAQUE); the vault never sees the key or")
	d.more("the password, and allows %d wrong guesses before it erases the key.", res.Enrollment.GuessLimit)
	r, err := phone.Open(ctx, client.OpenOptions{})
	if err != nil {
		return err
	}
	s, err := r.Backup(ctx, []string{data}, client.BackupOptions{Version: version()})
	r.Close()
	if err != nil {
		return err
	}
	d.say("Backup %d: %d files, %s stored.", s.Generation.Number, s.Generation.Files, size(s.StoredBytes))

	d.say("The phone is lost. A new phone has no state and no key; its owner types a wrong password:")
	_, _, err = client.RecoverKey(ctx, vs, []byte("correct horse battery stable"))
	if ExitCode(fail("restore", err)) != ExitWrongKey {
		return fmt.Errorf("a wrong password failed, but not as a wrong password: %v", err)
	}
	d.more("coffer: restore: %s", err)
	d.more("Exit code %d; the guess was counted by the vault before it answered.", ExitWrongKey)

	// A replica fails; the other two carry on.
	failed, err := f.StopLeader()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	leader, err := f.WaitForLeader(wctx)
	cancel()
	if err != nil {
		return fmt.Errorf("after replica %s stopped: %w", failed, err)
	}
	d.say("Vault replica %s, the leader, goes down. The other two are a majority: %s leads now, and the", failed, leader)
	d.more("relay sends the next requests there. Nothing is lost: every guess count was on a majority.")

	key, sess, err := client.RecoverKey(ctx, vs, password)
	if err != nil {
		return fmt.Errorf("recovery with replica %s down: %w", failed, err)
	}
	defer key.Zero()
	nr, err := client.Open(ctx, repoURL, key)
	if err != nil {
		return err
	}
	defer nr.Close()
	target := filepath.Join(tmp, "new-phone", "restored")
	rs, err := nr.Restore(ctx, 0, target, client.RestoreOptions{})
	if err != nil {
		return err
	}
	if _, err := compareTrees(data, filepath.Join(target, filepath.Base(data))); err != nil {
		return fmt.Errorf("the tree restored with the password differs: %w", err)
	}
	d.say("The right password, with two replicas of three: the vault releases the wrapped key, and\n    backup %d is restored into %s (%d files, identical).",
		rs.Generation.Number, rel(tmp, target), rs.Files)
	for _, l := range sessionLines(sess) {
		d.more("%s", l)
	}
	if sess.FailedGuesses != 1 {
		return fmt.Errorf("the vault reported %d wrong guesses, want 1", sess.FailedGuesses)
	}
	return nil
}

func rel(base, p string) string {
	if r, err := filepath.Rel(base, p); err == nil {
		return r
	}
	return p
}

func shortName(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 && len(name)-i > 17 {
		return name[:i+1] + name[i+1:i+17] + "…"
	}
	return name
}

// words for chat-like text.
var chatWords = strings.Fields(`ok yes no maybe tomorrow tonight lunch dinner coffee train late sorry
thanks love see you soon call me later photo video meeting work home kids school
weekend plans beach rain sun birthday cake party at the station when where why
how great sounds good haha lol nice cool wait what sure done running minutes`)

var chatNames = []string{"Ana", "Ben", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana"}

// writeChatDB writes an SQLite-like file: a 100-byte header and 4 KiB pages
// of chat messages, about n bytes in all.
func writeChatDB(path string, rng *rand.Rand, n int) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, err
	}
	var buf bytes.Buffer
	buf.WriteString("SQLite format 3\x00")
	buf.Write(make([]byte, 84))
	t := time.Date(2025, 1, 1, 8, 0, 0, 0, time.UTC)
	for buf.Len() < n {
		page := chatPage(rng, &t)
		buf.Write(page)
	}
	return int64(buf.Len()), os.WriteFile(path, buf.Bytes(), 0o600)
}

func chatPage(rng *rand.Rand, t *time.Time) []byte {
	page := make([]byte, 0, 4096)
	page = append(page, 0x0d, 0, 0, 0, 0, 0, 0, 0)
	for {
		*t = t.Add(time.Duration(rng.IntN(600)) * time.Second)
		msg := fmt.Sprintf("%s|%s|", t.Format(time.RFC3339), chatNames[rng.IntN(len(chatNames))])
		for range 3 + rng.IntN(12) {
			msg += chatWords[rng.IntN(len(chatWords))] + " "
		}
		msg = strings.TrimSpace(msg) + "\x00"
		if len(page)+len(msg) > 4096 {
			break
		}
		page = append(page, msg...)
	}
	return append(page, make([]byte, 4096-len(page))...)
}

func appendChats(path string, rng *rand.Rand, n int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	t := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for range n / 40 {
		if _, err := f.Write(chatPage(rng, &t)); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func writeRandom(path string, rng *rand.Rand, n int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b := make([]byte, n)
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return os.WriteFile(path, b, 0o644)
}

// writeMedia writes a few dozen files of random bytes in nested folders.
func writeMedia(dir string, rng *rand.Rand) (int, int64, error) {
	var total int64
	files := 0
	for month := 1; month <= 6; month++ {
		sub := filepath.Join(dir, fmt.Sprintf("2025-%02d", month))
		for i := 1; i <= 5; i++ {
			name := fmt.Sprintf("IMG_%04d.jpg", i)
			n := 20<<10 + rng.IntN(300<<10)
			if i == 2 && month%2 == 1 {
				name = fmt.Sprintf("VID_%04d.mp4", i)
				n = 400<<10 + rng.IntN(400<<10)
			}
			if err := writeRandom(filepath.Join(sub, name), rng, n); err != nil {
				return 0, 0, err
			}
			files++
			total += int64(n)
		}
	}
	notes := filepath.Join(dir, "Voice Notes", "2025")
	for i := 1; i <= 6; i++ {
		n := 5<<10 + rng.IntN(60<<10)
		if err := writeRandom(filepath.Join(notes, fmt.Sprintf("PTT-%02d.opus", i)), rng, n); err != nil {
			return 0, 0, err
		}
		files++
		total += int64(n)
	}
	if err := os.Chmod(filepath.Join(notes, "PTT-01.opus"), 0o600); err != nil {
		return 0, 0, err
	}
	return files, total, nil
}

// objectSet lists the stored objects of a local repository.
func objectSet(repo string) (map[string]int64, error) {
	m := map[string]int64{}
	err := filepath.WalkDir(repo, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		name, _ := filepath.Rel(repo, p)
		m[filepath.ToSlash(name)] = fi.Size()
		return nil
	})
	return m, err
}

// newest returns the largest data object (a piece, or a pack of small
// pieces) in after that is not in before:
// uploaded for the newest backup, so certainly used by it.
func newest(before, after map[string]int64) string {
	var best string
	for name, sz := range after {
		if _, ok := before[name]; ok || !(strings.HasPrefix(name, "data/") || strings.HasPrefix(name, "packs/")) {
			continue
		}
		if best == "" || sz > after[best] {
			best = name
		}
	}
	return best
}

// flipOneByte flips one bit in the middle of object name of a local
// repository.
func flipOneByte(repo, name string) (string, int64, error) {
	if name == "" {
		return "", 0, errors.New("found no object to tamper with")
	}
	p := filepath.Join(repo, filepath.FromSlash(name))
	b, err := os.ReadFile(p)
	if err != nil {
		return "", 0, err
	}
	off := int64(len(b) / 2)
	b[off] ^= 0x01
	return name, off, os.WriteFile(p, b, 0o600)
}

// compareTrees compares two trees entry by entry: types, permission bits,
// file contents and link targets. It returns the number of entries.
func compareTrees(a, b string) (int, error) {
	n := 0
	seen := map[string]bool{}
	err := filepath.WalkDir(a, func(pa string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(a, pa)
		seen[r] = true
		pb := filepath.Join(b, r)
		fa, err := os.Lstat(pa)
		if err != nil {
			return err
		}
		fb, err := os.Lstat(pb)
		if err != nil {
			return fmt.Errorf("%s is missing", r)
		}
		if fileMode(fa) != fileMode(fb) {
			return fmt.Errorf("%s: mode %v, restored as %v", r, fileMode(fa), fileMode(fb))
		}
		n++
		switch {
		case fa.Mode().IsRegular():
			ba, err := os.ReadFile(pa)
			if err != nil {
				return err
			}
			bb, err := os.ReadFile(pb)
			if err != nil {
				return err
			}
			if !bytes.Equal(ba, bb) {
				return fmt.Errorf("%s: contents differ", r)
			}
			if !fa.ModTime().Equal(fb.ModTime()) {
				return fmt.Errorf("%s: modification time %v, restored as %v", r, fa.ModTime(), fb.ModTime())
			}
		case fa.Mode()&fs.ModeSymlink != 0:
			ta, _ := os.Readlink(pa)
			tb, _ := os.Readlink(pb)
			if ta != tb {
				return fmt.Errorf("%s: link to %q, restored as %q", r, ta, tb)
			}
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	var extra []string
	err = filepath.WalkDir(b, func(pb string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(b, pb)
		if !seen[r] {
			extra = append(extra, r)
		}
		return nil
	})
	if err == nil && len(extra) > 0 {
		slices.Sort(extra)
		err = fmt.Errorf("restored tree has extra entries: %s", strings.Join(extra, ", "))
	}
	return n, err
}

// fileMode is used by the demo's comparison.
func fileMode(fi fs.FileInfo) fs.FileMode { return fi.Mode() & (fs.ModePerm | fs.ModeType) }
