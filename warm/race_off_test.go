//go:build !race

package warm

const raceEnabled = false
