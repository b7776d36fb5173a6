// Command reader is the test app of the real node: a container that reads a relayed
// Secret the two ways pods do, and logs what it read.
//
//	reader -env USERNAME -file /etc/db/username
//
// It prints `username=<value> from env USERNAME` once, then `username=<value> from
// file <path>` at start and each time the file's content changes, every line
// prefixed with the Unix time in nanoseconds, so that a test can measure when a
// rotation reached the container from the container's own log. The values it reads
// are test data: this app exists to show them.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	env := flag.String("env", "", "environment variable to print")
	file := flag.String("file", "", "file to print, and to print again when it changes")
	every := flag.Duration("every", 50*time.Millisecond, "how often to read the file")
	flag.Parse()

	say := func(format string, args ...any) {
		fmt.Printf("%d "+format+"\n", append([]any{time.Now().UnixNano()}, args...)...)
	}
	if *env != "" {
		say("%s=%s from env %s", key(*env), os.Getenv(*env), *env)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var (
		last    []byte
		lastErr string
		seen    bool
	)
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for {
		if *file != "" {
			data, err := os.ReadFile(*file)
			switch {
			case err != nil:
				if err.Error() != lastErr {
					say("cannot read %s: %v", *file, err)
				}
				lastErr, seen = err.Error(), false
			case !seen || !bytes.Equal(data, last):
				say("%s=%s from file %s", filepath.Base(*file), data, *file)
				last, lastErr, seen = data, "", true
			}
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// key is the name a value is printed under: the variable's name, lower-cased.
func key(env string) string { return string(bytes.ToLower([]byte(env))) }
