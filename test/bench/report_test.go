package bench_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Values of row.Met.
const (
	metYes   = "yes"
	metNo    = "no"
	metNone  = "-" // informational: the issue sets no target
	metError = "error"
)

// row is one line of the summary: a figure of secret-relay, the baseline it is
// measured against, their ratio or the target, and whether the target is met.
type row struct {
	Measurement string `json:"measurement"`
	Relay       string `json:"secretRelay"`
	Baseline    string `json:"baseline"`
	Target      string `json:"ratioTarget"`
	Met         string `json:"met"`
}

// report is the JSON file: how the run was made, every measurement's figures, and
// the summary table.
type report struct {
	StartedAt       time.Time         `json:"startedAt"`
	DurationSeconds float64           `json:"durationSeconds"`
	Revision        string            `json:"revision,omitempty"`
	GoVersion       string            `json:"goVersion"`
	Platform        string            `json:"platform"`
	CPUs            int               `json:"cpus"`
	Settings        map[string]string `json:"settings"`

	Admission   *admissionResult   `json:"admission,omitempty"`
	PodCreation *podCreationResult `json:"podCreation,omitempty"`
	Freshness   *freshnessResult   `json:"freshness,omitempty"`
	ColdBurst   *coldBurstResult   `json:"coldBurst,omitempty"`
	Sweep       *sweepResult       `json:"sweep,omitempty"`
	Scale       *scaleResult       `json:"scale,omitempty"`
	Fleet       *fleetResult       `json:"fleet,omitempty"`

	Summary []row `json:"summary"`
	// Failures name the measurements that could not be completed.
	Failures []string `json:"failures,omitempty"`
}

func newReport(started time.Time, settings map[string]string) *report {
	return &report{
		StartedAt: started.UTC(),
		Revision:  gitRevision(),
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
		CPUs:      runtime.NumCPU(),
		Settings:  settings,
	}
}

// add appends rows to the summary.
func (r *report) add(rows ...row) { r.Summary = append(r.Summary, rows...) }

// fail records a measurement that could not be completed, in the JSON and as a row.
func (r *report) fail(name, why string) {
	r.Failures = append(r.Failures, name+": "+why)
	r.add(row{Measurement: name, Relay: why, Baseline: "-", Target: "-", Met: metError})
}

func (r *report) finish(took time.Duration) { r.DurationSeconds = took.Seconds() }

// printTable writes the summary as a Markdown table, aligned for the terminal and
// ready to paste into the README.
func (r *report) printTable(out io.Writer) {
	header := row{"measurement", "secret-relay", "baseline", "ratio / target", "met?"}
	rows := append([]row{header}, r.Summary...)
	cells := func(x row) []string { return []string{x.Measurement, x.Relay, x.Baseline, x.Target, x.Met} }
	widths := make([]int, 5)
	for _, x := range rows {
		for i, c := range cells(x) {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	line := func(cs []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cs {
			fmt.Fprintf(&b, " %s%s |", c, strings.Repeat(" ", widths[i]-len([]rune(c))))
		}
		fmt.Fprintln(out, b.String())
	}
	fmt.Fprintf(out, "\nsecret-relay benchmark, %s, %d CPUs, %s, took %s\n\n",
		r.StartedAt.Format(time.RFC3339), r.CPUs, r.revisionOrUnknown(), time.Duration(r.DurationSeconds*float64(time.Second)).Round(time.Second))
	line(cells(header))
	dashes := make([]string, 5)
	for i, w := range widths {
		dashes[i] = strings.Repeat("-", w)
	}
	line(dashes)
	for _, x := range rows[1:] {
		line(cells(x))
	}
	fmt.Fprintln(out)
}

func (r *report) revisionOrUnknown() string {
	if r.Revision == "" {
		return "revision unknown"
	}
	return "revision " + r.Revision
}

// writeJSON writes the report to path, creating its directory.
func (r *report) writeJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("could not create the directory of %s: %w", path, err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("could not encode the report: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("could not write %s: %w", path, err)
	}
	return nil
}

// gitRevision is the checkout's commit, marked dirty when it has changes; empty when
// git cannot tell.
func gitRevision() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// latency summarises a sample of durations, in milliseconds for the JSON.
type latency struct {
	N      int     `json:"n"`
	P50Ms  float64 `json:"p50Ms"`
	P99Ms  float64 `json:"p99Ms"`
	MaxMs  float64 `json:"maxMs"`
	MeanMs float64 `json:"meanMs"`
}

// summarize computes nearest-rank percentiles of ds.
func summarize(ds []time.Duration) latency {
	if len(ds) == 0 {
		return latency{}
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	return latency{
		N:      len(sorted),
		P50Ms:  ms(percentile(sorted, 0.50)),
		P99Ms:  ms(percentile(sorted, 0.99)),
		MaxMs:  ms(sorted[len(sorted)-1]),
		MeanMs: ms(sum / time.Duration(len(sorted))),
	}
}

// percentile is the nearest-rank p-quantile of sorted, which must not be empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fromMs turns milliseconds back into a duration, for printing.
func fromMs(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

// formatDuration prints a duration with about three significant digits.
func formatDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", ms(d))
	default:
		return fmt.Sprintf("%.2f ms", ms(d))
	}
}

// formatMs prints milliseconds as formatDuration does.
func formatMs(v float64) string { return formatDuration(fromMs(v)) }

// formatBytes prints a size in MiB, or KiB below one MiB.
func formatBytes(n int64) string {
	if n < 0 {
		return "-" + formatBytes(-n)
	}
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// ratio is a/b, or NaN when b is zero.
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// formatRatio prints a ratio as "1.23×".
func formatRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", v)
}

// metIf turns a target check into a row's Met.
func metIf(ok bool) string {
	if ok {
		return metYes
	}
	return metNo
}

// jsonString encodes v as compact JSON, as an annotation value.
func jsonString(v any) (string, error) {
	data, err := json.Marshal(v)
	return string(data), err
}
