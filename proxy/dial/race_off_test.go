//go:build !race

package dial

const raceEnabled = false
