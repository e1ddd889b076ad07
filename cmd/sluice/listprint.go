package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/term"
)

// Helpers that write figures, sizes and times for people.

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// entries writes "1 entry", "4,500,000 entries".
func entries(n int) string { return thousands(n) + " " + plural(n, "entry", "entries") }

// thousands writes n with thousands separators: 4,500,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// byteSize writes a byte count for people: 512 B, 1.2 KiB, 3.4 MiB.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func timeStamp(t time.Time) string { return t.Local().Format("2006-01-02 15:04") }

// period writes a refresh period without zero units: 24h, 30m, 1h30m.
func period(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// agoString writes a duration for people: 45s, 12m, 3h, 2d.
func agoString(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// progressBar draws a one-line download bar on a terminal.
type progressBar struct {
	w     io.Writer
	label string
	last  time.Time
}

func (b *progressBar) update(read, total int64) {
	now := time.Now()
	if now.Sub(b.last) < 100*time.Millisecond && read != total {
		return
	}
	b.last = now
	if total <= 0 {
		fmt.Fprintf(b.w, "\r\033[K%s: %s", b.label, byteSize(read))
		return
	}
	const width = 30
	done := int(min(read, total) * width / total)
	fmt.Fprintf(b.w, "\r\033[K%s: [%s%s] %s / %s", b.label, strings.Repeat("=", done), strings.Repeat(" ", width-done), byteSize(read), byteSize(total))
}

func (b *progressBar) clear() { fmt.Fprint(b.w, "\r\033[K") }

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
