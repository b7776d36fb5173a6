// Command secret-relay is a mutating admission webhook that relays Secrets from an
// upstream cluster into a downstream one at pod creation.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped by the Makefile: -ldflags "-X main.version=$(git describe)".
var version = "dev"

const usage = `secret-relay relays Secrets from an upstream cluster at pod admission.

Usage:
  secret-relay serve [flags]   run the webhook and the sync controller
  secret-relay check STORE     check, step by step, that a store works
  secret-relay version         print the version

Run 'secret-relay serve --help' or 'secret-relay check --help' for the flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		// A second signal stops the process at once instead of waiting for the drain.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "secret-relay: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, version)
		return nil
	case "serve":
		flags, err := parseFlags(args[1:], stderr)
		if err != nil {
			return err
		}
		return serve(ctx, flags)
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
