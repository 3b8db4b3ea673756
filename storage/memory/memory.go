// Package memory is an in-memory storage.Backend for tests.
//
// It keeps every object in RAM, so it suits unit tests of the packages
// above storage (repository, retry, CLI) and is no place for real backups.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/storage"
)

// Backend is an in-memory storage.Backend. The zero value is not usable;
// call New.
type Backend struct {
	mu      sync.RWMutex
	objects map[string]object
}

type object struct {
	data    []byte // never modified once stored
	modTime time.Time
}

var _ storage.Backend = (*Backend)(nil)

// New returns an empty in-memory backend.
func New() *Backend {
	return &Backend{objects: make(map[string]object)}
}

// Put implements storage.Backend.
func (b *Backend) Put(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	obj, err := b.read(ctx, "put", name, body, size)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.objects[name] = obj
	b.mu.Unlock()
	return nil
}

// PutIfAbsent implements storage.Backend.
func (b *Backend) PutIfAbsent(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	obj, err := b.read(ctx, "put-if-absent", name, body, size)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objects[name]; ok {
		return fmt.Errorf("memory: put-if-absent %q: %w", name, storage.ErrExist)
	}
	b.objects[name] = obj
	return nil
}

// read copies the body; the copy is what gets stored, so the caller may
// reuse its buffer.
func (b *Backend) read(ctx context.Context, op, name string, body io.ReaderAt, size int64) (object, error) {
	if err := storage.CheckName(name); err != nil {
		return object{}, fmt.Errorf("memory: %s: %w", op, err)
	}
	if size < 0 {
		return object{}, fmt.Errorf("memory: %s %q: negative size %d", op, name, size)
	}
	if err := ctx.Err(); err != nil {
		return object{}, fmt.Errorf("memory: %s %q: %w", op, name, err)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(body, 0, size), data); err != nil {
		return object{}, fmt.Errorf("memory: %s %q: reading the %d-byte body: %w", op, name, size, err)
	}
	return object{data: data, modTime: time.Now()}, nil
}

func (b *Backend) lookup(ctx context.Context, op, name string) (object, error) {
	if err := storage.CheckName(name); err != nil {
		return object{}, fmt.Errorf("memory: %s: %w", op, err)
	}
	if err := ctx.Err(); err != nil {
		return object{}, fmt.Errorf("memory: %s %q: %w", op, name, err)
	}
	b.mu.RLock()
	obj, ok := b.objects[name]
	b.mu.RUnlock()
	if !ok {
		return object{}, fmt.Errorf("memory: %s %q: %w", op, name, storage.ErrNotExist)
	}
	return obj, nil
}

// Get implements storage.Backend.
func (b *Backend) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	obj, err := b.lookup(ctx, "get", name)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(obj.data)), nil
}

// Stat implements storage.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (storage.ObjectInfo, error) {
	obj, err := b.lookup(ctx, "stat", name)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	return storage.ObjectInfo{Name: name, Size: int64(len(obj.data)), ModTime: obj.modTime}, nil
}

// List implements storage.Backend. fn is called without any lock held, so
// it may use the backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := storage.CheckPrefix(prefix); err != nil {
		return fmt.Errorf("memory: list: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: list %q: %w", prefix, err)
	}
	b.mu.RLock()
	var infos []storage.ObjectInfo
	for name, obj := range b.objects {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, storage.ObjectInfo{Name: name, Size: int64(len(obj.data)), ModTime: obj.modTime})
		}
	}
	b.mu.RUnlock()
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memory: list %q: %w", prefix, err)
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements storage.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := storage.CheckName(name); err != nil {
		return fmt.Errorf("memory: delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: delete %q: %w", name, err)
	}
	b.mu.Lock()
	delete(b.objects, name)
	b.mu.Unlock()
	return nil
}

// Location implements storage.Backend.
func (b *Backend) Location() string { return "memory" }

// Capabilities implements storage.Backend: PutIfAbsent checks and stores
// under one lock, so it is atomic.
func (b *Backend) Capabilities() storage.Capabilities {
	return storage.Capabilities{AtomicCreate: true}
}

// Len returns the number of objects stored.
func (b *Backend) Len() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.objects)
}
