package rules

import "fmt"

// ParseError is a problem at one line of a config or list file. Its text has
// the compiler's "file:line: problem" form, which editors understand.
type ParseError struct {
	// File is the file as named by the caller.
	File string
	// Line counts from 1; zero when the problem has no single line.
	Line int
	// Err is the problem.
	Err error
}

// Error returns "file:line: problem", or "file: problem" without a line.
func (e *ParseError) Error() string {
	if e.Line <= 0 {
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
}

// Unwrap returns the underlying problem.
func (e *ParseError) Unwrap() error { return e.Err }
