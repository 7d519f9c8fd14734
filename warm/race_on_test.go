//go:build race

package warm

// raceEnabled: the race detector inflates memory, so RSS checks are off.
const raceEnabled = true
