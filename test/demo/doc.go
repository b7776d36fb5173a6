// Package demo is `make demo`: the seed walkthrough (shared/seed/eso-two-clusters.md)
// run end to end on two local control planes, with secret-relay in place of External
// Secrets Operator. Every step the reader would type is run with the real kubectl and
// printed with its output; TestDemo lives in demo_test.go and runs only when
// SECRET_RELAY_DEMO=1.
package demo
