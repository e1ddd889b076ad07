package rules

import (
	"maps"
	"slices"
)

// CategoryNames returns the names of cfg's categories, sorted: the keys of
// `categories:` and the sub-folders of `category_dirs:` that hold a domains
// file (and are in their `only:`). It reads no list, so it is cheap enough
// for shell completion.
func CategoryNames(cfg *Config) []string {
	names := make(map[string]bool, len(cfg.Categories))
	for name := range cfg.Categories {
		names[name] = true
	}
	for _, cd := range cfg.CategoryDirs {
		for _, c := range ut1Categories(cd, nil) {
			names[c.name] = true
		}
	}
	return slices.Sorted(maps.Keys(names))
}
