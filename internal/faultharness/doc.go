// Package faultharness runs a 5-replica Backup Key Vault fleet of real
// 'coffer vault serve' processes and a relay on 127.0.0.1, drives it with
// package recovery's clients while it kills, isolates, partitions, pauses
// and slows replicas, records every operation, and checks the history:
// linearizability per account with porcupine (Model), the guess budget,
// acknowledged registrations, and destroyed records (Check).
//
// The tests (go test ./internal/faultharness/) are the harness; README.md says what
// is injected and checked, how to run the short and long profiles, and how
// to read a failure.
package faultharness
