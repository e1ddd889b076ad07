//go:build race

package dial

const raceEnabled = true
