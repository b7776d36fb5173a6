// Command plot draws the fleet measurement's scaling curve from make bench's JSON
// report: memory, ready time after a restart and fan-out time against the number of
// copies. It is a module of its own so that the plotting library stays out of
// secret-relay's.
//
//	go run . ../../bin/bench-results.json ../../docs/fleet-scaling.png
package main

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// report is the part of the bench's JSON report the plot reads.
type report struct {
	Revision string `json:"revision"`
	Fleet    *struct {
		Stores          int `json:"stores"`
		UpstreamSecrets int `json:"upstreamSecrets"`
		Stages          []struct {
			Copies           int     `json:"copies"`
			RSSBaselineBytes float64 `json:"rssBaselineBytes"`
			RSSBytes         float64 `json:"rssBytes"`
			DataBytes        float64 `json:"dataBytes"`
			ReadySeconds     float64 `json:"readySeconds"`
			Fanout1k         fanout  `json:"fanout1k"`
			FanoutAll        fanout  `json:"fanoutAll"`
		} `json:"stages"`
	} `json:"fleet"`
}

type fanout struct {
	Lag struct {
		P99Ms float64 `json:"p99Ms"`
		MaxMs float64 `json:"maxMs"`
	} `json:"lag"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: plot <bench-results.json> <out.png>")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if r.Fleet == nil || len(r.Fleet.Stages) == 0 {
		return fmt.Errorf("%s has no fleet measurement: run make bench with it", in)
	}
	const mib = 1 << 20
	var rss, dataLine, target, ready, fan1k, fanAll plotter.XYs
	for _, st := range r.Fleet.Stages {
		x := float64(st.Copies)
		rss = append(rss, plotter.XY{X: x, Y: (st.RSSBytes - st.RSSBaselineBytes) / mib})
		dataLine = append(dataLine, plotter.XY{X: x, Y: st.DataBytes / mib})
		target = append(target, plotter.XY{X: x, Y: (st.DataBytes + x*4096) / mib})
		ready = append(ready, plotter.XY{X: x, Y: st.ReadySeconds})
		fan1k = append(fan1k, plotter.XY{X: x, Y: st.Fanout1k.Lag.P99Ms / 1000})
		fanAll = append(fanAll, plotter.XY{X: x, Y: st.FanoutAll.Lag.MaxMs / 1000})
	}
	title := fmt.Sprintf("at %s: %d stores, %d upstream Secrets", r.Revision, r.Fleet.Stores, r.Fleet.UpstreamSecrets)
	memory, err := panel("RSS above a fresh process", "MiB", title,
		"secret-relay", rss, "copies' data", dataLine, "target: data + 4 KiB/copy", target)
	if err != nil {
		return err
	}
	restart, err := panel("ready after restart", "s", "", "secret-relay", ready)
	if err != nil {
		return err
	}
	fan, err := panel("one upstream change reaching its copies", "s", "",
		"1,000 copies, p99", fan1k, "every copy, last", fanAll)
	if err != nil {
		return err
	}
	const w, h = 6 * vg.Inch, 9 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadX: vg.Points(6), PadY: vg.Points(12)}
	canvases := plot.Align([][]*plot.Plot{{memory}, {restart}, {fan}}, tiles, dc)
	memory.Draw(canvases[0][0])
	restart.Draw(canvases[1][0])
	fan.Draw(canvases[2][0])
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// panel is one plot against copies, of the named lines (name, points, name, ...).
func panel(what, unit, title string, lines ...any) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = what
	if title != "" {
		p.Title.Text = what + "\n" + title
	}
	p.X.Label.Text = "copies"
	p.Y.Label.Text = unit
	p.Y.Min = 0
	p.Legend.Top, p.Legend.Left = true, true
	p.BackgroundColor = color.White
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return nil, err
	}
	return p, nil
}
