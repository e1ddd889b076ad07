// Package filter decides whether a request may pass.
// It compiles a rules.Set into an immutable Engine; Decide does no I/O,
// keeps no state between calls and is safe for concurrent use.
//
// It imports nothing for networking, files or logging, and neither
// syscall nor unsafe, with one exception: huge_linux.go asks the kernel
// (madvise, through syscall and unsafe) to back the engine's large tables
// with huge pages, advice that changes nothing but speed. It is kept here
// rather than behind a hook because it applies to the engine's own private
// slices, once filled; test/layout_test.go holds the package to this.
// prefetch_amd64.s and prefetch_arm64.s hold one prefetch instruction
// each (see prefetch_asm.go).
package filter

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Verdict is the outcome of a decision.
type Verdict uint8

const (
	// Block refuses the request. It is the zero value, so a forgotten
	// decision fails closed.
	Block Verdict = iota
	// Allow lets the request through.
	Allow
)

// String returns "allow" or "block".
func (v Verdict) String() string {
	if v == Allow {
		return "allow"
	}
	return "block"
}

// Request is what a front end knows about a connection when it must decide.
type Request struct {
	// Client is the client's source address. Invalid means unknown: client
	// conditions then do not match.
	Client netip.Addr
	// User is the authenticated user name, or "".
	User string
	// Groups are the user's directory groups (their Sluice names, from
	// `auth: ldap: groups:`), as the authenticator established them; a
	// rule's groups condition matches them as well as the members listed
	// under `groups:`.
	Groups []string
	// Host is the destination: a name normalized by rules.NormalizeHost, or an IP literal.
	Host string
	// Port is the destination port.
	Port uint16
	// Time is when the request arrived; schedules are evaluated against it.
	// The zero time matches no schedule window.
	Time time.Time
}

// RuleRef points at the rule that decided.
type RuleRef struct {
	// Index is the rule's position counting from 1; 0 when no rule matched.
	Index int
	// Name is the rule's name from the config, or "".
	Name string
	// File and Line locate the rule in the config.
	File string
	Line int
	// Text is the rule as written.
	Text string
	// Pattern is the destination pattern that matched, as written; "" when
	// the rule has no destination list.
	Pattern string
	// List and ListLine locate the category entry that matched, when known.
	// The engine does not keep them (see rules for explanations); they are
	// filled by callers that explain.
}

// String renders the reference for logs and the CLI, for admins:
// "rule 3 (sluice.yaml:12)", or `rule 3 "social" (sluice.yaml:12)` for a
// named rule. It names the config file without its folder. Clients see
// Label instead: a config line tells them nothing they should know.
func (r RuleRef) String() string {
	if r.Index == 0 {
		if r.Text != "" { // a temporary exception
			return r.Text
		}
		return "default"
	}
	s := "rule " + strconv.Itoa(r.Index)
	if r.Name != "" {
		s += " " + strconv.Quote(r.Name)
	}
	if r.File != "" {
		file := r.File
		if i := strings.LastIndexByte(file, '/'); i >= 0 {
			file = file[i+1:]
		}
		s += " (" + file + ":" + strconv.Itoa(r.Line) + ")"
	}
	return s
}

// Label names the rule for clients (block page, X-Sluice-Block, the
// text of a refused CONNECT): its name, else "rule 3"; "default" when no
// rule matched. It never holds a pattern, a client subnet or a config line.
func (r RuleRef) Label() string {
	switch {
	case r.Index == 0:
		return "default"
	case r.Name != "":
		return r.Name
	}
	return "rule " + strconv.Itoa(r.Index)
}

// Decision is the engine's answer, with why.
type Decision struct {
	// Verdict is Allow or Block.
	Verdict Verdict
	// Reason is a fixed phrase for people and logs: ReasonBlocked ("blocked
	// by rule"), ReasonAllowed, ReasonDefault ("no rule matched") or
	// ReasonInvalid ("invalid destination").
	Reason string
	// Rule is the deciding rule; zero when Default.
	Rule RuleRef
	// Category is the category whose entry matched, or "". Category names come
	// from the config, a bounded set, so it is safe as a metrics label.
	Category string
	// Default is true when no rule matched and the configured default applied.
	Default bool
	// Via is the route for an allowed request: the rule's via, else the
	// configured default route (Config.Upstream): an upstream name,
	// "direct", or "" when none is configured. It is "" for a block.
	Via string
	// Enforce is, for a request a `safesearch:` rule allowed, the engine's
	// enforcement host (forcesafesearch.google.com, ...): the front ends
	// dial it instead of Host, and send the client's bytes unchanged.
	// "" otherwise.
	Enforce string
	// WouldBlock is set on an allowed request that a report-only rule
	// (mode: report) would have blocked; Report is that rule.
	WouldBlock bool
	Report     RuleRef
}

// RuleName names the deciding rule for logs: the rule or the temporary
// exception (RuleRef.String),
// "default" when the configured default decided, or "" when no rule and no
// default did (a refusal of the front end or the dial-time guard, such as
// a loop or a sniffed tunnel with no name).
func (d Decision) RuleName() string {
	switch {
	case d.Rule.Index > 0 || d.Rule.Text != "": // a rule, or a temporary exception
		return d.Rule.String()
	case d.Default:
		return "default"
	}
	return ""
}

// Route names the route of an allowed request for logs: Via, or "direct"
// when Via is empty. A blocked request took no route: "".
func (d Decision) Route() string {
	switch {
	case d.Verdict != Allow:
		return ""
	case d.Via == "":
		return "direct"
	}
	return d.Via
}

// OrBlock returns d, or a plain Block decision when d is nil: the decision
// a refusal stands on when whoever refused (a dial-time guard) gave none,
// so that a refusal is never logged or answered as an allow.
func OrBlock(d *Decision) *Decision {
	if d == nil {
		return &Decision{Verdict: Block}
	}
	return d
}
