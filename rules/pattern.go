package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/gobwas/glob"
)

// CategoryPrefix introduces a category pattern: "category:social".
const CategoryPrefix = "category:"

// globChars are the characters that make a pattern a glob.
const globChars = "*?[]{}"

// String returns the kind's name: "exact", "suffix", "glob", "category" or "cidr".
func (k PatternKind) String() string {
	switch k {
	case Exact:
		return "exact"
	case Suffix:
		return "suffix"
	case Glob:
		return "glob"
	case Category:
		return "category"
	case CIDR:
		return "cidr"
	}
	return fmt.Sprintf("PatternKind(%d)", uint8(k))
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.Text }

// ParsePattern parses one destination pattern:
//
//	example.com         Exact: that host only
//	.example.com        Suffix: the domain and every subdomain
//	*.example.com       Glob (any of *?[]{}): gobwas/glob with '.' as separator
//	category:social     Category: every domain of the category and its subdomains
//	builtin:doh         Category: a list shipped inside Sluice (Builtins); its
//	                    category name is the whole pattern
//	10.0.0.0/8, ::1     CIDR: an IP literal destination in the prefix; a bare
//	                    address is a /32 or /128
//
// Hosts are normalized with NormalizeHost; a CIDR is stored masked, with an
// IPv4-mapped IPv6 prefix turned into its IPv4 form.
func ParsePattern(s string) (Pattern, error) {
	text := strings.TrimSpace(s)
	p := Pattern{Text: text}
	if text == "" {
		return p, errors.New("rules: empty pattern")
	}
	if strings.HasPrefix(text, BuiltinPrefix) {
		if !IsBuiltin(text) {
			return p, fmt.Errorf("rules: unknown built-in list %q (want one of %s)", text, strings.Join(Builtins(), ", "))
		}
		p.Kind, p.Host = Category, text
		return p, nil
	}
	if name, ok := strings.CutPrefix(text, CategoryPrefix); ok {
		if err := checkCategoryName(name); err != nil {
			return p, err
		}
		p.Kind, p.Host = Category, name
		return p, nil
	}
	if strings.IndexByte(text, '/') >= 0 || isIPLiteral(text) {
		pfx, err := ParsePrefix(text)
		if err != nil {
			return p, err
		}
		p.Kind, p.Prefix = CIDR, pfx
		return p, nil
	}
	if strings.ContainsAny(text, globChars) {
		g, err := normalizeGlob(text)
		if err != nil {
			return p, err
		}
		p.Kind, p.Host = Glob, g
		return p, nil
	}
	if rest, ok := strings.CutPrefix(text, "."); ok {
		h, err := NormalizeHost(rest)
		if err != nil || strings.HasPrefix(rest, ".") {
			return p, fmt.Errorf("rules: invalid suffix pattern %q", text)
		}
		p.Kind, p.Host = Suffix, h
		return p, nil
	}
	h, err := NormalizeHost(text)
	if err != nil {
		return p, fmt.Errorf("rules: invalid pattern %q: not a host, glob, category or CIDR", text)
	}
	p.Kind, p.Host = Exact, h
	return p, nil
}

// isIPLiteral reports whether s parses as an IP address, bracketed or not.
func isIPLiteral(s string) bool {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	_, err := netip.ParseAddr(s)
	return err == nil
}

// ParsePrefix parses an IP address or a CIDR prefix, as used in patterns and
// in clients lists. A bare address is a /32 or /128. The result is masked,
// and an IPv4-mapped IPv6 prefix of at least /96 becomes its IPv4 form.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("rules: invalid IP address %q", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("rules: invalid CIDR %q", s)
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// normalizeGlob lower-cases a glob, drops a trailing dot, converts
// international labels without glob characters to Punycode, and checks that
// gobwas/glob compiles it.
func normalizeGlob(s string) (string, error) {
	g := strings.TrimSuffix(s, ".")
	labels := strings.Split(g, ".")
	for i, l := range labels {
		if l == "" {
			return "", fmt.Errorf("rules: invalid glob %q: empty label", s)
		}
		if strings.ContainsAny(l, globChars) {
			labels[i] = strings.ToLower(l)
			continue
		}
		h, err := NormalizeHost(l)
		if err != nil {
			return "", fmt.Errorf("rules: invalid glob %q: bad label %q", s, l)
		}
		labels[i] = h
	}
	g = strings.Join(labels, ".")
	if strings.ContainsAny(g, " \t\\") {
		return "", fmt.Errorf("rules: invalid glob %q", s)
	}
	if _, err := glob.Compile(g, '.'); err != nil {
		return "", fmt.Errorf("rules: invalid glob %q: %v", s, err)
	}
	return g, nil
}

// checkCategoryName reports an error unless name is a usable category name:
// letters, digits, '_', '-' and '.', not starting with '.'.
func checkCategoryName(name string) error {
	if name == "" {
		return errors.New("rules: empty category name")
	}
	if name[0] == '.' {
		return fmt.Errorf("rules: invalid category name %q", name)
	}
	if strings.HasPrefix(name, BuiltinPrefix) {
		return fmt.Errorf("rules: %q is a built-in list, not a category of the config: it cannot be defined or edited (make a category of your own)", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("rules: invalid category name %q", name)
		}
	}
	return nil
}
