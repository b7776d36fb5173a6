package e2e_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestLeaderKilledMidSync kills the leader with SIGKILL while it writes a steady
// stream of upstream updates into many copies. The lease is not released, so the
// other replica takes over only once it expires; every update written upstream,
// those written while no one led among them, must still reach every copy, and no
// copy may ever go back to an older value.
func TestLeaderKilledMidSync(t *testing.T) {
	const (
		secrets    = 20
		namespaces = 3
		copies     = secrets * namespaces
		lease      = 4 * time.Second
		// afterTakeover is how long upstream keeps changing under the new leader.
		afterTakeover = 2 * time.Second
	)
	leaseArgs := []string{
		"--leader-elect-lease-duration=" + lease.String(),
		"--leader-elect-renew-deadline=3s",
		"--leader-elect-retry-period=500ms",
	}
	w := newWorld(t, leaseArgs...)
	first := w.Relay
	second := cluster.StartRelay(t, relayBinary, suiteDir, w.Down, leaseArgs...)
	registerLog(second.LogFile)
	ctx := cluster.Context(t)

	require.Eventually(t, first.BecameLeader, 10*time.Second, 50*time.Millisecond,
		"the first replica takes the lease")
	require.False(t, second.BecameLeader())
	second.Register(t, w.Down)

	// value is what the upstream Secrets hold in round n: obviously fake, and never
	// one of the fixture values the suite scans the logs for.
	value := func(n int) string { return "v-" + strconv.Itoa(n) }
	round := func(v []byte) (int, bool) {
		n, err := strconv.Atoi(strings.TrimPrefix(string(v), "v-"))
		return n, err == nil && strings.HasPrefix(string(v), "v-")
	}
	names := make([]string, secrets)
	upstream := make([]*corev1.Secret, secrets)
	for i := range secrets {
		names[i] = fmt.Sprintf("relayed-%02d", i)
		upstream[i] = w.Up.CreateSecret(t, "default", names[i], map[string]string{"value": value(0)})
	}
	list, err := json.Marshal(names)
	require.NoError(t, err)
	nsNames := make([]string, namespaces)
	for j := range namespaces {
		nsNames[j] = fmt.Sprintf("killed-leader-%d", j)
		w.SeedStore(t, nsNames[j], "remote-k8s-store")
		_, err := w.Down.Client.CoreV1().Pods(nsNames[j]).Create(ctx, cluster.Pod("app", map[string]string{
			relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: string(list),
		}), metav1.CreateOptions{})
		require.NoError(t, err)
	}
	managed := metav1.ListOptions{LabelSelector: relay.LabelManagedBy + "=" + relay.ManagedByValue}
	// copyRounds reads the round every downstream copy holds, keyed namespace/name.
	copyRounds := func() (map[string]int, error) {
		rounds := map[string]int{}
		for _, ns := range nsNames {
			list, err := w.Down.Client.CoreV1().Secrets(ns).List(ctx, managed)
			if err != nil {
				return nil, err
			}
			for _, s := range list.Items {
				n, ok := round(s.Data["value"])
				if !ok {
					return nil, fmt.Errorf("copy %s/%s holds an unexpected value", ns, s.Name)
				}
				rounds[ns+"/"+s.Name] = n
			}
		}
		return rounds, nil
	}

	// The sampler watches for regressions: a copy seen holding an older round than
	// it held before.
	stopSampling := make(chan struct{})
	var (
		samplerWG   sync.WaitGroup
		samples     int
		regressions []string
		sampleErrs  []error
	)
	samplerWG.Go(func() {
		highest := map[string]int{}
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(100 * time.Millisecond):
			}
			rounds, err := copyRounds()
			if err != nil {
				sampleErrs = append(sampleErrs, err)
				continue
			}
			samples++
			for key, n := range rounds {
				if n < highest[key] {
					regressions = append(regressions, fmt.Sprintf("%s went from round %d back to %d", key, highest[key], n))
				}
				highest[key] = max(highest[key], n)
			}
		}
	})

	// The writer updates the upstream Secrets, round after round. The second half
	// stops changing a while after the kill, before the lease expires: their last
	// values are written while no one leads, and reach the copies only if the new
	// leader rechecks what changed before it took over.
	stopWriting := make(chan struct{})
	var gapClosed atomic.Bool
	var (
		writerWG sync.WaitGroup
		mu       sync.Mutex // guards the writer's figures below
		last     = make([]int, secrets)
		writes   int
		lastGap  time.Time
		writeErr error
	)
	gapSecret := func(i int) bool { return i >= secrets/2 }
	writtenSoFar := func() int {
		mu.Lock()
		defer mu.Unlock()
		return writes
	}
	writerWG.Go(func() {
		for n := 1; ; n++ {
			for i := range secrets {
				select {
				case <-stopWriting:
					return
				default:
				}
				if gapSecret(i) && gapClosed.Load() {
					continue
				}
				upstream[i].Data = map[string][]byte{"value": []byte(value(n))}
				updated, err := w.Up.Client.CoreV1().Secrets("default").Update(ctx, upstream[i], metav1.UpdateOptions{})
				mu.Lock()
				if err != nil {
					writeErr = fmt.Errorf("round %d, %s: %w", n, names[i], err)
					mu.Unlock()
					return
				}
				upstream[i], last[i] = updated, n
				writes++
				if gapSecret(i) {
					lastGap = time.Now()
				}
				mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	stopWriter := func() {
		select {
		case <-stopWriting:
		default:
			close(stopWriting)
		}
		writerWG.Wait()
	}
	t.Cleanup(stopWriter)
	t.Cleanup(func() {
		select {
		case <-stopSampling:
		default:
			close(stopSampling)
		}
		samplerWG.Wait()
	})

	// Kill the leader while it is writing: once it has written a round's worth.
	require.Eventually(t, func() bool { return first.Metric(t, "secret_relay_syncs_total", `result="updated"`) >= copies },
		20*time.Second, 50*time.Millisecond, "the leader writes the upstream updates")
	byFirst := first.Metric(t, "secret_relay_syncs_total", `result="updated"`)
	first.Kill(t)
	killed := time.Now()
	atKill := writtenSoFar()
	time.AfterFunc(lease/4, func() { gapClosed.Store(true) })

	require.Eventually(t, second.BecameLeader, lease+6*time.Second, 50*time.Millisecond,
		"the second replica takes over once the lease expires")
	tookOver := time.Now()
	takeover := tookOver.Sub(killed)
	leaderless := writtenSoFar() - atKill
	// A lease released on the way out would be taken at the follower's next retry.
	assert.Greater(t, takeover, time.Second, "the killed leader did not release the lease; the follower waited for it to expire")

	// Meanwhile, time how long the new leader takes to bring the copies of the
	// Secrets last written while no one led up to date.
	mu.Lock()
	gapLast := slices.Clone(last)
	mu.Unlock()
	var gapSynced time.Duration
	for deadline := tookOver.Add(afterTakeover); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if gapSynced != 0 {
			continue
		}
		rounds, err := copyRounds()
		if err != nil {
			continue
		}
		synced := true
		for _, ns := range nsNames {
			for i, name := range names {
				synced = synced && (!gapSecret(i) || rounds[ns+"/"+name] == gapLast[i])
			}
		}
		if synced {
			gapSynced = time.Since(tookOver)
		}
	}
	stopWriter()
	stopped := time.Now()
	require.NoError(t, writeErr)
	require.True(t, lastGap.Before(tookOver), "half the Secrets were last written while no one led")

	expected := map[string]int{}
	for _, ns := range nsNames {
		for i, name := range names {
			expected[ns+"/"+name] = last[i]
		}
	}
	converged := assert.Eventually(t, func() bool {
		got, err := copyRounds()
		return err == nil && assert.ObjectsAreEqual(expected, got)
	}, lease+10*time.Second, 100*time.Millisecond, "every copy holds the last value written upstream for it")
	convergence := time.Since(stopped)
	if !converged {
		got, err := copyRounds()
		require.NoError(t, err)
		for key, n := range expected {
			if got[key] != n {
				t.Errorf("%s holds round %d, upstream was last written with round %d", key, got[key], n)
			}
		}
	}

	close(stopSampling)
	samplerWG.Wait()
	assert.Empty(t, sampleErrs)
	assert.Empty(t, regressions, "no copy ever went back to an older value")
	assert.Positive(t, samples)

	for _, ns := range nsNames {
		list, err := w.Down.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		var all []string
		for _, s := range list.Items {
			all = append(all, s.Name)
		}
		want := append([]string{"remote-sa-token"}, names...)
		slices.Sort(want)
		slices.Sort(all)
		assert.Equal(t, want, all, "namespace %s holds exactly its copies and the store's token", ns)
	}

	bySecond := second.Metric(t, "secret_relay_syncs_total", `result="updated"`)
	assert.Positive(t, bySecond, "the new leader wrote")
	t.Logf("%d updates written upstream over %d Secrets (%d copies), up to round %d", writes, secrets, copies, slices.Max(last))
	t.Logf("the leader had written %.0f copies when it was killed; the other replica took over %s later (lease %s); %d updates were written upstream meanwhile, the last to half the Secrets %s before the takeover",
		byFirst, takeover.Round(time.Millisecond), lease, leaderless, tookOver.Sub(lastGap).Round(time.Millisecond))
	if gapSynced != 0 {
		t.Logf("the copies of the Secrets last written while no one led were up to date %s after the takeover", gapSynced.Round(time.Millisecond))
	}
	if converged {
		t.Logf("every copy held the last upstream value %s after the writer stopped", convergence.Round(time.Millisecond))
	}
	t.Logf("%d samples of every copy, %d regressions", samples, len(regressions))
	t.Logf("new leader's secret_relay_syncs_total: updated %.0f, unchanged %.0f, error %.0f",
		bySecond, second.Metric(t, "secret_relay_syncs_total", `result="unchanged"`), second.Metric(t, "secret_relay_syncs_total", `result="error"`))
}
