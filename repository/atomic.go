package repository

import "sync/atomic"

type atomicInt = atomic.Int64
