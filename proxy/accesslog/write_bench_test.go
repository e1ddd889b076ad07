package accesslog

import (
	"path/filepath"
	"testing"
)

// BenchmarkWriteFileJSON is one tunnel's access line as the server logs
// it: Write to a JSON file (the load harness's setup), from parallel
// goroutines, the writes to the file included.
func BenchmarkWriteFileJSON(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "access.log"), FormatJSON, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := tunnelRecord()
		for pb.Next() {
			l.Write(r)
		}
	})
}
