//go:build !linux

package cli

import "syscall"

// devChildAttr: without Linux's parent-death signal, children of a killed
// 'coffer dev --replicas N' keep running (replicas.json has their pids).
func devChildAttr() *syscall.SysProcAttr { return nil }
