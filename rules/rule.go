package rules

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// String returns "rule N", the name errors and logs use for a rule.
func (r Rule) String() string { return "rule " + strconv.Itoa(r.Index) }

// String returns the range as "443" or "8000-8100".
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return strconv.Itoa(int(r.Lo)) + "-" + strconv.Itoa(int(r.Hi))
}

// Contains reports whether the window includes t, in t's location.
// A window that wraps past midnight belongs to the day it starts on.
func (w TimeWindow) Contains(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	if w.From <= w.To {
		return w.hasDay(day) && w.From <= m && m < w.To
	}
	if m >= w.From {
		return w.hasDay(day)
	}
	if m < w.To {
		return w.hasDay((day + 6) % 7) // started yesterday
	}
	return false
}

func (w TimeWindow) hasDay(d time.Weekday) bool { return w.Days == 0 || w.Days&(1<<d) != 0 }

func (p *cfgParser) parseRules(n *yaml.Node) error {
	items, err := p.list(n, "rules: ")
	if err != nil {
		return err
	}
	named := map[string]int{} // rule name -> index of the rule that has it
	for i, it := range items {
		r, err := p.parseRule(it, i+1)
		if err != nil {
			return err
		}
		if r.Name != "" {
			if prev, dup := named[r.Name]; dup {
				return p.errf(it, "rule %d: name %q is already the name of rule %d", r.Index, r.Name, prev)
			}
			named[r.Name] = r.Index
		}
		p.cfg.Rules = append(p.cfg.Rules, r)
	}
	return nil
}

// maxRuleName bounds a rule's name, in bytes.
const maxRuleName = 80

// checkRuleName reports an error unless name can be shown to clients: not
// empty, at most maxRuleName bytes, valid UTF-8, printable (no control
// characters), without surrounding spaces.
func checkRuleName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > maxRuleName:
		return fmt.Errorf("name longer than %d bytes", maxRuleName)
	case !utf8.ValidString(name):
		return errors.New("name is not valid UTF-8")
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("name %q starts or ends with a space", name)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) && r != ' ' {
			return fmt.Errorf("name %q has a control or invisible character", name)
		}
	}
	return nil
}

func (p *cfgParser) parseRule(n *yaml.Node, index int) (Rule, error) {
	r := Rule{Index: index, Line: n.Line}
	ctx := fmt.Sprintf("rule %d: ", index)
	if n.Kind != yaml.MappingNode {
		return r, p.errf(n, "%smust be a mapping with block: or allow:", ctx)
	}
	kvs, err := p.pairs(n, ctx)
	if err != nil {
		return r, err
	}
	var text []string
	for _, kv := range kvs {
		k, v := kv.key, kv.val
		kctx := ctx + k.Value + ": "
		switch k.Value {
		case "block", "allow":
			if r.Action != "" {
				return r, p.errf(k, "%sboth block and allow; a rule takes one", ctx)
			}
			r.Action = Action(k.Value)
			items, err := p.list(v, kctx)
			if err != nil {
				return r, err
			}
			for _, it := range items {
				s, err := p.str(it, kctx)
				if err != nil {
					return r, err
				}
				pat, err := ParsePattern(s)
				if err != nil {
					return r, p.errf(it, "%s%s", ctx, bare(err))
				}
				if pat.Kind == Category {
					p.catRefs = append(p.catRefs, nameRef{it, ctx, pat.Host})
				}
				r.Dests = append(r.Dests, pat)
			}
		case "clients":
			if r.Clients, err = p.prefixes(v, kctx); err != nil {
				return r, err
			}
		case "ports":
			if r.Ports, err = p.ports(v, kctx); err != nil {
				return r, err
			}
		case "users":
			if r.Users, _, err = p.strs(v, kctx); err != nil {
				return r, err
			}
		case "groups":
			var nodes []*yaml.Node
			if r.Groups, nodes, err = p.strs(v, kctx); err != nil {
				return r, err
			}
			for i, g := range r.Groups {
				p.groupRef = append(p.groupRef, nameRef{nodes[i], ctx, g})
			}
		case "time":
			ss, nodes, err := p.strs(v, kctx)
			if err != nil {
				return r, err
			}
			for i, s := range ss {
				w, err := ParseTimeWindow(s)
				if err != nil {
					return r, p.errf(nodes[i], "%s%s", ctx, bare(err))
				}
				r.Times = append(r.Times, w)
			}
		case "via":
			if r.Via, err = p.str(v, kctx); err != nil {
				return r, err
			}
			p.routeRef = append(p.routeRef, nameRef{v, ctx + "via: ", r.Via})
		case "safesearch":
			if r.Enforce != nil {
				return r, p.errf(k, "%ssafesearch given twice", ctx)
			}
			if err := p.parseSafeSearch(&r, v, kctx); err != nil {
				return r, err
			}
		case "mode":
			mode, err := p.str(v, kctx)
			if err != nil {
				return r, err
			}
			switch mode {
			case "report":
				r.Report = true
			case "enforce":
			default:
				return r, p.errf(v, "%sunknown mode %q (want enforce or report)", kctx, mode)
			}
		case "name":
			if r.Name, err = p.str(v, kctx); err != nil {
				return r, err
			}
			if err := checkRuleName(r.Name); err != nil {
				return r, p.errf(v, "%s%v", kctx, err)
			}
			continue // the name is not part of the rule's text
		default:
			return r, p.errf(k, "%sunknown key %q (want block, allow or safesearch, name, mode, clients, ports, users, groups, time, via)", ctx, k.Value)
		}
		text = append(text, k.Value+": "+render(v))
	}
	switch {
	case r.Enforce != nil && r.Action != "":
		return r, p.errf(n, "%ssafesearch: allows the engines' hosts itself; it takes no block: or allow:", ctx)
	case r.Enforce != nil:
		r.Action = Allow
	case r.Action == "":
		return r, p.errf(n, "%sneeds block:, allow: or safesearch:", ctx)
	}
	if r.Report && r.Action != Block {
		return r, p.errf(n, "%smode: report is for block rules (a rule with block:)", ctx)
	}
	r.Text = strings.Join(text, ", ")
	return r, nil
}

func (p *cfgParser) ports(n *yaml.Node, ctx string) ([]PortRange, error) {
	items, err := p.list(n, ctx)
	if err != nil {
		return nil, err
	}
	out := make([]PortRange, 0, len(items))
	for _, it := range items {
		s, err := p.str(it, ctx)
		if err != nil {
			return nil, err
		}
		pr, err := ParsePortRange(s)
		if err != nil {
			return nil, p.errf(it, "%s%s", ctx, bare(err))
		}
		out = append(out, pr)
	}
	return out, nil
}

// ParsePortRange parses "443" or "8000-8100". Ports run from 1 to 65535.
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if !isRange {
		hi = lo
	}
	l, err1 := parsePort(lo)
	h, err2 := parsePort(hi)
	if err1 != nil || err2 != nil || l > h {
		return PortRange{}, fmt.Errorf("rules: invalid port %q (want 1-65535 or a range such as 8000-8100)", s)
	}
	return PortRange{Lo: l, Hi: h}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0, errors.New("bad port")
	}
	return uint16(n), nil
}

var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// ParseTimeWindow parses a weekly window: days, a time range, or both, such
// as "Mon-Fri 08:00-17:00", "Sat,Sun", "22:00-06:00" (wraps past midnight),
// "Fri-Mon" (wraps past Sunday). Day names are English, three letters or
// full, any case. "24:00" may end a range; a bare hour ("8-17") means
// whole hours.
func ParseTimeWindow(s string) (TimeWindow, error) {
	w := TimeWindow{Text: s, From: 0, To: 24 * 60}
	bad := func(why string) (TimeWindow, error) {
		return TimeWindow{}, fmt.Errorf("rules: invalid time window %q: %s", s, why)
	}
	fields := strings.Fields(s)
	if len(fields) == 0 || len(fields) > 2 {
		return bad(`want days, a time range or both, such as "Mon-Fri 08:00-17:00"`)
	}
	var daysSpec, timeSpec string
	for _, f := range fields {
		if f[0] >= '0' && f[0] <= '9' {
			if timeSpec != "" {
				return bad("two time ranges")
			}
			timeSpec = f
		} else {
			if daysSpec != "" || timeSpec != "" {
				return bad("days must come first, once")
			}
			daysSpec = f
		}
	}
	if daysSpec != "" {
		for part := range strings.SplitSeq(daysSpec, ",") {
			a, b, isRange := strings.Cut(part, "-")
			from, ok1 := parseDay(a)
			to := from
			ok2 := true
			if isRange {
				to, ok2 = parseDay(b)
			}
			if !ok1 || !ok2 {
				return bad(fmt.Sprintf("unknown day in %q (want Mon, Tue, Wed, Thu, Fri, Sat, Sun)", part))
			}
			for d := from; ; d = (d + 1) % 7 {
				w.Days |= 1 << d
				if d == to {
					break
				}
			}
		}
	}
	if timeSpec != "" {
		a, b, ok := strings.Cut(timeSpec, "-")
		if !ok {
			return bad("want a time range such as 08:00-17:00")
		}
		from, ok1 := parseClock(a)
		to, ok2 := parseClock(b)
		if !ok1 || !ok2 || from == 24*60 {
			return bad("times are HH:MM (or an hour, HH) from 00:00 to 24:00")
		}
		if from == to {
			return bad("empty time range")
		}
		w.From, w.To = from, to
	}
	return w, nil
}

func parseDay(s string) (int, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) < 3 {
		return 0, false
	}
	for i, n := range dayNames {
		if strings.HasPrefix(s, n) {
			full := strings.ToLower(time.Weekday(i).String())
			if s == n || s == full {
				return i, true
			}
		}
	}
	return 0, false
}

func parseClock(s string) (int, bool) {
	h, m, ok := strings.Cut(s, ":")
	if !ok {
		m, ok = "00", true // "8-17" means 08:00-17:00
	}
	if len(m) != 2 || len(h) < 1 || len(h) > 2 {
		return 0, false
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || hh == 24 && mm != 0 {
		return 0, false
	}
	return hh*60 + mm, true
}

// maxRuleText bounds Rule.Text; longer renderings end in "…".
const maxRuleText = 400

// render writes a YAML value compactly on one line, for Rule.Text.
func render(n *yaml.Node) string {
	var b strings.Builder
	renderTo(&b, n, 0)
	if b.Len() > maxRuleText {
		return b.String()[:maxRuleText] + "…"
	}
	return b.String()
}

func renderTo(b *strings.Builder, n *yaml.Node, depth int) {
	if b.Len() > maxRuleText || depth > 20 { // aliases can make a small file render huge
		return
	}
	n = resolveAlias(n)
	switch {
	case n == nil || isNull(n):
		b.WriteString("[]")
	case n.Kind == yaml.ScalarNode:
		if n.Value == "" || strings.ContainsAny(n.Value, ",[]{}\"\n") {
			b.WriteString(strconv.Quote(n.Value))
		} else {
			b.WriteString(n.Value)
		}
	case n.Kind == yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteString(", ")
			}
			renderTo(b, c, depth+1)
		}
		b.WriteByte(']')
	case n.Kind == yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				b.WriteString(", ")
			}
			renderTo(b, n.Content[i], depth+1)
			b.WriteString(": ")
			renderTo(b, n.Content[i+1], depth+1)
		}
		b.WriteByte('}')
	default:
		b.WriteString("?")
	}
}
