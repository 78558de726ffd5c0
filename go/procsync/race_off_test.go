//go:build linux && !race

package procsync

const raceEnabled = false
