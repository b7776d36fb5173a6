package bench_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/secret-relay/secret-relay/test/cluster"
)

// upstreamCounts are a reader's requests for Secrets in its upstream namespace, from
// the upstream audit log. Each request counts once. A streaming list (a watch with
// sendInitialEvents, as client-go's informers now list) counts as a list.
type upstreamCounts struct {
	// Gets of the named Secret, or of any Secret when none is named.
	Gets int `json:"gets"`
	// NamedLists select the named Secret by field.
	NamedLists int `json:"namedLists"`
	// Lists read the whole namespace, as a cache that starts does.
	Lists int `json:"lists"`
	// Watches are the other watches, counted when they start.
	Watches int `json:"watches"`
}

// reads counts the requests that read the named Secret alone: the figure of the
// cold-burst target. Lists of the whole namespace are reported beside it.
func (c upstreamCounts) reads() int { return c.Gets + c.NamedLists }

func (c upstreamCounts) minus(o upstreamCounts) upstreamCounts {
	return upstreamCounts{Gets: c.Gets - o.Gets, NamedLists: c.NamedLists - o.NamedLists, Lists: c.Lists - o.Lists, Watches: c.Watches - o.Watches}
}

// String prints the counts of a named Secret.
func (c upstreamCounts) String() string {
	return fmt.Sprintf("%d get, %d list by name; namespace: %d list, %d watch", c.Gets, c.NamedLists, c.Lists, c.Watches)
}

// namespaceString prints the counts of a whole namespace.
func (c upstreamCounts) namespaceString() string {
	return fmt.Sprintf("%d get, %d list, %d watch", c.Gets, c.Lists, c.Watches)
}

// upstreamSecretRequests counts, so far, the upstream requests of the eso-reader of
// namespace ns that could read Secret name there, or any Secret when name is empty.
// Gets and lists count once complete, watches once started.
func (b *bench) upstreamSecretRequests(t *testing.T, ns, name string) upstreamCounts {
	t.Helper()
	reader := "system:serviceaccount:" + ns + ":" + cluster.ReaderServiceAccount
	var c upstreamCounts
	for _, ev := range b.w.Up.AuditLog(t) {
		ref := ev.ObjectRef
		if ev.User.Username != reader || ref.Resource != "secrets" || ref.Namespace != ns {
			continue
		}
		// A list or watch names the object only when it selects it by field.
		named := name != "" && ref.Name == name
		whole := ref.Name == ""
		list := ev.Verb == "list" && ev.Stage == "ResponseComplete" ||
			ev.Verb == "watch" && ev.Stage == "ResponseStarted" && strings.Contains(ev.RequestURI, "sendInitialEvents=true")
		switch {
		case ev.Verb == "get" && ev.Stage == "ResponseComplete" && (name == "" || named):
			c.Gets++
		case list && named:
			c.NamedLists++
		case list && whole:
			c.Lists++
		case ev.Verb == "watch" && ev.Stage == "ResponseStarted" && (whole || named):
			c.Watches++
		}
	}
	return c
}
