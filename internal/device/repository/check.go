package repository

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/device/container"
)

// CheckOptions tune Check.
type CheckOptions struct {
	// ReadData downloads and authenticates every referenced piece and
	// checks its content against its keyed name (what Verify does).
	ReadData bool
	// ReadDataSubset reads only some pieces, as restic's
	// --read-data-subset: "n/t" reads group n of t (1 ≤ n ≤ t), chosen
	// deterministically from the piece ids, so that checking "1/5", "2/5"
	// … "5/5" on five days reads everything once; "x%" reads a random x
	// percent (0 < x ≤ 100) of the pieces, different on each run.
	// Ignored when ReadData is set.
	ReadDataSubset string
	// Progress, if set, receives the bytes of data read.
	Progress Progress
}

// AffectedFile is one file of one backup that uses a damaged piece.
type AffectedFile struct {
	Generation uint64 `json:"generation"`
	Path       string `json:"path"`
}

// DamagedPiece is a piece a backup references that is missing from the
// storage or fails authentication, with every file it breaks.
type DamagedPiece struct {
	ID      string         `json:"id"`
	Problem string         `json:"problem"`
	Files   []AffectedFile `json:"files"`
	// V1: an unpadded piece of a version 1 backup.
	V1 bool `json:"v1,omitempty"`
}

// BadManifest is a backup whose manifest is missing, does not decrypt, or
// is malformed.
type BadManifest struct {
	Generation uint64 `json:"generation"`
	Problem    string `json:"problem"`
}

// CheckSummary reports what Check found.
type CheckSummary struct {
	Generations  int            `json:"generations"`
	Pieces       int64          `json:"pieces"`      // distinct pieces referenced
	ReadPieces   int64          `json:"read_pieces"` // pieces downloaded and authenticated
	ReadBytes    int64          `json:"read_bytes"`  // their plaintext bytes
	Unreferenced int64          `json:"unreferenced"`
	Damaged      []DamagedPiece `json:"damaged,omitempty"`
	BadManifests []BadManifest  `json:"bad_manifests,omitempty"`
	// Packs and Indexes count the pack and index objects; BadIndexes
	// lists the indexes that do not decrypt or parse (damage: Repair
	// indexes their packs again); UnindexedPacks counts the packs no
	// index lists (left by an interrupted backup, which the next backup
	// indexes; not damage unless a backup uses them, then they show as
	// missing pieces until Repair indexes them).
	Packs          int `json:"packs"`
	Indexes        int `json:"indexes"`
	UnindexedPacks int `json:"unindexed_packs,omitempty"`
	// DamagedPacks names the packs that failed authentication (found with
	// ReadData): every piece in one is lost. Repair deletes them once
	// their pieces are uploaded again or their files dropped.
	DamagedPacks []string   `json:"damaged_packs,omitempty"`
	BadIndexes   []BadIndex `json:"bad_indexes,omitempty"`
	Duration     Duration   `json:"duration"`
}

// OK reports whether Check found no damage.
func (s *CheckSummary) OK() bool {
	return len(s.Damaged) == 0 && len(s.BadManifests) == 0 && len(s.BadIndexes) == 0
}

// err is the error Check returns for what it found: nil, or one wrapping
// container.ErrIntegrity that counts the damage and names the first.
func (s *CheckSummary) err() error {
	if s.OK() {
		return nil
	}
	var parts []string
	if n := len(s.BadManifests); n > 0 {
		parts = append(parts, fmt.Sprintf("%d damaged backup manifests (first: backup %d: %s)", n, s.BadManifests[0].Generation, s.BadManifests[0].Problem))
	}
	if n := len(s.Damaged); n > 0 {
		files := 0
		for _, d := range s.Damaged {
			files += len(d.Files)
		}
		first := s.Damaged[0]
		where := ""
		if len(first.Files) > 0 {
			where = fmt.Sprintf(", used by %s in backup %d", first.Files[0].Path, first.Files[0].Generation)
		}
		parts = append(parts, fmt.Sprintf("%d missing or damaged pieces affecting %d files (first: piece %s: %s%s)", n, files, first.ID[:16], first.Problem, where))
	}
	if n := len(s.BadIndexes); n > 0 {
		parts = append(parts, fmt.Sprintf("%d damaged indexes (first: %s)", n, s.BadIndexes[0].Problem))
	}
	return fmt.Errorf("%w: %s", container.ErrIntegrity, strings.Join(parts, "; "))
}

// ValidateSubset checks a CheckOptions.ReadDataSubset ("n/t" or "x%")
// without checking anything, so that a command can refuse a malformed one
// as a usage error before opening the repository.
func ValidateSubset(s string) error {
	_, err := parseSubset(s)
	return err
}

// subset selects the pieces a check reads.
type subset func(pieceID) bool

func parseSubset(s string) (subset, error) {
	s = strings.TrimSpace(s)
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		x, err := strconv.ParseFloat(pct, 64)
		if err != nil || !(x > 0 && x <= 100) {
			return nil, fmt.Errorf("read-data subset %q: the percentage must be above 0 and at most 100", s)
		}
		return func(pieceID) bool {
			var b [8]byte
			rand.Read(b[:])
			return float64(binary.BigEndian.Uint64(b[:])>>11)/(1<<53) < x/100
		}, nil
	}
	ns, ts, ok := strings.Cut(s, "/")
	n, err1 := strconv.ParseUint(ns, 10, 32)
	t, err2 := strconv.ParseUint(ts, 10, 32)
	if !ok || err1 != nil || err2 != nil || n < 1 || n > t {
		return nil, fmt.Errorf("read-data subset %q: want n/t (1 ≤ n ≤ t) or a percentage such as 10%%", s)
	}
	return func(id pieceID) bool {
		return binary.BigEndian.Uint64(id[:8])%t == n-1
	}, nil
}

// Check checks the repository, writing nothing. By default it is fast: it
// reads every manifest (each must decrypt and parse) and every index (each
// must decrypt and parse), lists the stored pieces and packs, and checks
// that every piece a backup references is there: as an object of its own,
// or listed by an index in a stored pack. With
// ReadData (or a ReadDataSubset) it also downloads pieces and
// authenticates them. It reports every missing or damaged piece with the
// backups and files it affects; the error it returns with the summary
// wraps container.ErrIntegrity if anything is damaged. Storage failures
// abort it.
func (r *Repository) Check(ctx context.Context, opts CheckOptions) (*CheckSummary, error) {
	start := time.Now()
	var sel subset
	if opts.ReadData {
		sel = func(pieceID) bool { return true }
	} else if opts.ReadDataSubset != "" {
		var err error
		if sel, err = parseSubset(opts.ReadDataSubset); err != nil {
			return nil, err
		}
	}
	gens, err := r.manifestNumbers(ctx)
	if err != nil {
		return nil, err
	}
	sum := &CheckSummary{Generations: len(gens)}
	refs := map[pieceID]piece{}
	for _, g := range gens {
		err := r.forEachEntry(ctx, g, func(e *entry) error {
			for _, p := range e.Pieces {
				refs[p.ID] = p
			}
			return nil
		})
		if errors.Is(err, ErrNoGeneration) {
			sum.Generations-- // pruned meanwhile
			continue
		}
		if err != nil {
			if !isDamage(err) {
				return nil, fmt.Errorf("checking backup %d: %w", g, err)
			}
			sum.BadManifests = append(sum.BadManifests, BadManifest{Generation: g, Problem: err.Error()})
		}
	}
	sum.Pieces = int64(len(refs))
	listed, err := r.listPieces(ctx)
	if err != nil {
		return nil, err
	}
	x, err := r.loadIndex(ctx)
	if err != nil {
		return nil, err
	}
	sum.Indexes = len(x.indexes) + len(x.bad)
	sum.BadIndexes = x.bad
	usedPacks := map[objID]bool{}
	for id := range listed {
		if _, ok := refs[id]; !ok {
			sum.Unreferenced++
		}
	}
	problems := map[pieceID]string{}
	var toRead, packed []piece
	var total int64
	for id, p := range refs {
		if l, ok := x.lookup(id); ok && !p.V1 {
			usedPacks[l.pack.id] = true
			if sel != nil && sel(id) {
				packed = append(packed, p)
				total += p.Size
			}
			continue
		}
		oi, ok := listed[id]
		switch {
		case !ok:
			if l, in := x.blobs[id]; in && !p.V1 {
				problems[id] = fmt.Sprintf("missing from storage (its pack %s is missing)", packName(l.pack.id))
			} else {
				problems[id] = "missing from storage"
			}
		case oi.Size <= minSealedSize:
			problems[id] = fmt.Sprintf("stored object is only %d bytes", oi.Size)
		case sel != nil && sel(id):
			toRead = append(toRead, p)
			total += p.Size
		}
	}
	for _, pk := range x.packs {
		if !pk.present {
			continue
		}
		sum.Packs++
		if !pk.indexed {
			sum.UnindexedPacks++
		}
		if !usedPacks[pk.id] {
			sum.Unreferenced++
		}
	}
	// Packed pieces are read in pack order, so that each pack is
	// downloaded once.
	sort.Slice(packed, func(i, j int) bool {
		a, _ := x.lookup(packed[i].ID)
		b, _ := x.lookup(packed[j].ID)
		if c := bytes.Compare(a.pack.id[:], b.pack.id[:]); c != 0 {
			return c < 0
		}
		return a.off < b.off
	})
	toRead = append(packed, toRead...)
	if opts.Progress != nil && sel != nil {
		opts.Progress.SetTotal(total)
	}
	if len(toRead) > 0 {
		if err := r.readPieces(ctx, toRead, problems, sum, opts.Progress); err != nil {
			return nil, err
		}
	}
	if len(problems) > 0 {
		sum.Damaged, err = r.affected(ctx, gens, problems)
		if err != nil {
			return nil, err
		}
	}
	sum.Duration = Duration(time.Since(start))
	return sum, sum.err()
}

// isDamage reports whether err is about the repository's content (to be
// reported), not about reaching it (to abort on).
func isDamage(err error) bool {
	return errors.Is(err, container.ErrIntegrity) || errors.Is(err, container.ErrWrongKey) || errors.Is(err, container.ErrUnsupportedVersion)
}

// readPieces downloads and authenticates pieces on all workers, recording
// each failure in problems.
func (r *Repository) readPieces(ctx context.Context, ps []piece, problems map[pieceID]string, sum *CheckSummary, p Progress) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan piece)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range r.concurrency {
		wg.Go(func() {
			for pc := range jobs {
				data, err := r.fetchPiece(ctx, pc)
				if err == nil {
					id := r.idOf(pc, data)
					putPlain(data)
					if !hmac.Equal(id[:], pc.ID[:]) {
						err = integrityf("piece %s does not hold the content its name commits to", pc.ID.String()[:16])
					}
				}
				if err != nil && !isDamage(err) {
					cancel(err)
					continue
				}
				mu.Lock()
				if err != nil {
					if l, ok := r.curIndex().lookup(pc.ID); ok && !pc.V1 {
						if name := packName(l.pack.id); !slices.Contains(sum.DamagedPacks, name) {
							sum.DamagedPacks = append(sum.DamagedPacks, name)
						}
					}
					problems[pc.ID] = err.Error()
				} else {
					sum.ReadPieces++
					sum.ReadBytes += pc.Size
				}
				mu.Unlock()
				if p != nil {
					p.Add(pc.Size)
				}
			}
		})
	}
feed:
	for _, pc := range ps {
		select {
		case jobs <- pc:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	return context.Cause(ctx)
}

// affected reads the manifests again to find, for each damaged piece,
// every file that uses it.
func (r *Repository) affected(ctx context.Context, gens []uint64, problems map[pieceID]string) ([]DamagedPiece, error) {
	files := map[pieceID][]AffectedFile{}
	v1 := map[pieceID]bool{}
	for _, g := range gens {
		err := r.forEachEntry(ctx, g, func(e *entry) error {
			for _, p := range e.Pieces {
				if _, bad := problems[p.ID]; bad {
					v1[p.ID] = p.V1
					fs := files[p.ID]
					if n := len(fs); n == 0 || fs[n-1] != (AffectedFile{g, e.Path}) {
						files[p.ID] = append(fs, AffectedFile{Generation: g, Path: e.Path})
					}
				}
			}
			return nil
		})
		if err != nil && !isDamage(err) {
			return nil, err
		}
	}
	out := make([]DamagedPiece, 0, len(problems))
	for id, why := range problems {
		out = append(out, DamagedPiece{ID: id.String(), Problem: why, Files: files[id], V1: v1[id]})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Files, out[j].Files
		if len(a) > 0 && len(b) > 0 && a[0] != b[0] {
			if a[0].Generation != b[0].Generation {
				return a[0].Generation < b[0].Generation
			}
			return comparePaths(a[0].Path, b[0].Path) < 0
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Verify reads and authenticates every generation and every piece they
// reference, and checks each piece's content against its keyed name: a
// Check with ReadData. It writes nothing. Pieces that no generation
// references are counted (prune removes them). Every missing or damaged
// piece is listed in VerifySummary.Damaged with the backups and files it
// affects, and the error returned with the summary then wraps
// container.ErrIntegrity.
func (r *Repository) Verify(ctx context.Context, p Progress) (*VerifySummary, error) {
	cs, err := r.Check(ctx, CheckOptions{ReadData: true, Progress: p})
	if cs == nil {
		return nil, err
	}
	return &VerifySummary{
		Generations:  cs.Generations,
		Pieces:       cs.ReadPieces,
		Bytes:        cs.ReadBytes,
		Unreferenced: cs.Unreferenced,
		Damaged:      cs.Damaged,
		BadManifests: cs.BadManifests,
		BadIndexes:   cs.BadIndexes,
		Duration:     cs.Duration,
	}, err
}
