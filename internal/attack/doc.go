// Package attack holds attack tests: each drives one attack found by an
// adversarial review against real replicas (serve.Start in this process, or
// a fleet of real `coffer vault serve` processes and a relay: real sockets,
// real files, real TLS) and asserts it is refused. SECURITY.md names the
// test of each attack it describes. The package has no code of its own.
package attack
