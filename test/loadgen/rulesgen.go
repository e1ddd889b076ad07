package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A seeded generator of large rule sets for load 7, made like
// filter/filtertest's (which this program cannot import: it uses the
// standard library only): random registrable names under ten top-level
// labels, a quarter with a subdomain, spread over categories; globs with a
// literal suffix ("*.x.com", "ads*.x.com", "**.x.com", "t?.y.x.com") and
// one in a thousand without ("ads-7.*"). No generated name or glob matches
// origin.bench.test or an IP literal, so every load's request stays
// allowed and the rules only cost what a lookup costs.

var tlds = []string{"com", "net", "org", "de", "fr", "io", "co.uk", "info", "ru", "nl"}

func label(r *rand.Rand) string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [12]byte
	n := 5 + r.IntN(8)
	for i := range n {
		b[i] = chars[r.IntN(26)] // a letter first
		if i > 0 {
			b[i] = chars[r.IntN(len(chars))]
		}
	}
	return string(b[:n])
}

func domain(r *rand.Rand) string {
	d := label(r) + "." + tlds[r.IntN(len(tlds))]
	if r.IntN(4) == 0 {
		d = label(r) + "." + d
	}
	return d
}

// writeRules writes domains category domains into 50 list files in dir
// (cat00.txt ...) and returns the config text that loads them and blocks
// them, then blocks globs globs in ten rules.
func writeRules(dir string, seed uint64, domains, globs int) (string, error) {
	const ncat = 50
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	files := make([]*os.File, ncat)
	ws := make([]*bufio.Writer, ncat)
	var cfg strings.Builder
	cfg.WriteString("categories:\n")
	for i := range files {
		name := fmt.Sprintf("cat%02d", i)
		f, err := os.Create(filepath.Join(dir, name+".txt"))
		if err != nil {
			return "", err
		}
		defer f.Close()
		files[i], ws[i] = f, bufio.NewWriterSize(f, 64<<10)
		fmt.Fprintf(&cfg, "  %s: [%s.txt]\n", name, name)
	}
	for range domains {
		w := ws[r.IntN(ncat)]
		w.WriteString(domain(r))
		w.WriteByte('\n')
	}
	for i, w := range ws {
		if err := w.Flush(); err != nil {
			return "", err
		}
		if err := files[i].Close(); err != nil {
			return "", err
		}
	}
	cfg.WriteString("rules:\n")
	for i := range ncat {
		fmt.Fprintf(&cfg, "  - block: [\"category:cat%02d\"]\n", i)
	}
	if globs > 0 {
		loose := max(globs/1000, 1)
		per := (globs + 9) / 10
		var line []string
		flush := func() {
			if len(line) > 0 {
				cfg.WriteString("  - block: [" + strings.Join(line, ", ") + "]\n")
				line = line[:0]
			}
		}
		for i := range globs {
			var g string
			switch base := label(r) + "." + tlds[r.IntN(len(tlds))]; {
			case i < loose:
				g = "ads-" + strconv.Itoa(i) + ".*"
			case i%4 == 0:
				g = "*." + base
			case i%4 == 1:
				g = "ads*." + base
			case i%4 == 2:
				g = "**." + base
			default:
				g = "t?." + label(r) + "." + base
			}
			line = append(line, `"`+g+`"`)
			if len(line) == per {
				flush()
			}
		}
		flush()
	}
	return cfg.String(), nil
}
