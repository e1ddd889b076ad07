package reqid

import (
	"regexp"
	"sync"
	"testing"
)

func TestNewUnique(t *testing.T) {
	const workers, each = 8, 2000
	var mu sync.Mutex
	seen := make(map[string]bool, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			ids := make([]string, each)
			for i := range ids {
				ids[i] = New()
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if seen[id] {
					t.Errorf("id %q handed out twice", id)
				}
				seen[id] = true
			}
		})
	}
	wg.Wait()
	re := regexp.MustCompile(`^[a-km-z2-9]{4}-[0-9a-z]+$`)
	for id := range seen {
		if !re.MatchString(id) {
			t.Fatalf("id %q does not look like prefix-counter", id)
		}
		break
	}
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		New()
	}
}
