package memory_test

import (
	"testing"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/memory"
	"github.com/cofferhq/coffer/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return memory.New() })
}
