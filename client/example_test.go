package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/cofferhq/coffer/client"
)

// A repository in a directory under a fresh key: back a directory up,
// list the backups, and restore on "another device" that has only the
// repository's location and the 64-digit key.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "coffer-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Something to back up.
	notes := filepath.Join(dir, "notes")
	if err := os.MkdirAll(filepath.Join(notes, "2026"), 0o700); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(notes, "todo.txt"), []byte("buy milk\n"), 0o600); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(notes, "2026", "jan.txt"), []byte("happy new year\n"), 0o600); err != nil {
		log.Fatal(err)
	}

	// A fresh backup key and an empty repository. The key's 64 digits
	// (key.Digits()) are the only way back to the backups: an app shows
	// them to their owner once.
	repoURL := filepath.Join(dir, "repo") // or s3://bucket/prefix…
	key := client.NewKey()
	defer key.Zero()
	repo, err := client.Create(ctx, repoURL, key)
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close()

	s, err := repo.Backup(ctx, []string{notes}, client.BackupOptions{Host: "laptop"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("backup %d: %d files, %d bytes\n", s.Generation.Number, s.Generation.Files, s.Generation.Bytes)

	gens, err := repo.Generations(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, g := range gens {
		fmt.Printf("backup %d of %v from %s\n", g.Number, g.Paths, g.Host)
	}

	// Another device: the location and the digits.
	key2, err := client.ParseKey(key.Digits())
	if err != nil {
		log.Fatal(err)
	}
	defer key2.Zero()
	other, err := client.Open(ctx, repoURL, key2)
	if err != nil {
		log.Fatal(err)
	}
	defer other.Close()
	target := filepath.Join(dir, "restored")
	rs, err := other.Restore(ctx, 0, target, client.RestoreOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("restored backup %d: %d files\n", rs.Generation.Number, rs.Files)
	b, err := os.ReadFile(filepath.Join(target, "notes", "2026", "jan.txt"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("notes/2026/jan.txt: %s", b)

	// Output:
	// backup 1: 2 files, 24 bytes
	// backup 1 of [notes] from laptop
	// restored backup 1: 2 files
	// notes/2026/jan.txt: happy new year
}

// An enrolled device: Init makes the key and the repository and saves
// both, with the location, in the device's state directory; later runs
// just Open, and the device notices a repository rolled back.
func ExampleDevice() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "coffer-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	docs := filepath.Join(dir, "docs")
	if err := os.MkdirAll(docs, 0o700); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(docs, "a.txt"), []byte("a\n"), 0o600); err != nil {
		log.Fatal(err)
	}

	dev := client.NewDevice(filepath.Join(dir, "state"))
	res, err := dev.Init(ctx, filepath.Join(dir, "repo"))
	if err != nil {
		log.Fatal(err)
	}
	// Show res.Key.Digits() to the key's owner here, once.
	res.Key.Zero()
	fmt.Println("saved location:", filepath.Base(res.Repository))

	repo, err := dev.Open(ctx, client.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close()
	for range 2 {
		if _, err := repo.Backup(ctx, []string{docs}, client.BackupOptions{}); err != nil {
			log.Fatal(err)
		}
	}
	cfg, err := dev.Config()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("newest backup seen:", cfg.LastGeneration)

	// The storage loses the newest backup.
	if err := os.Remove(filepath.Join(dir, "repo", "manifests", "00000000000000000002")); err != nil {
		log.Fatal(err)
	}
	_, err = repo.Generations(ctx)
	fmt.Println("rolled back:", errors.Is(err, client.ErrRollback), errors.Is(err, client.ErrIntegrity))

	// Output:
	// saved location: repo
	// newest backup seen: 2
	// rolled back: true true
}
