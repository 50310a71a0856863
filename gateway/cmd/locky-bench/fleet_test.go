package main

import (
	"slices"
	"testing"
)

func TestParseSizes(t *testing.T) {
	f := func(in string, want []int) {
		t.Helper()
		got, err := parseSizes(in)
		if err != nil {
			t.Fatalf("parseSizes(%q): %s", in, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("parseSizes(%q): got %v; want %v", in, got, want)
		}
	}
	f("100", []int{100})
	f("100,1000,2000", []int{100, 1000, 2000})
	f(" 10, 20 ", []int{10, 20})
	f("9999", []int{9999})
}

func TestParseSizesRefuses(t *testing.T) {
	f := func(in string) {
		t.Helper()
		if got, err := parseSizes(in); err == nil {
			t.Fatalf("parseSizes(%q): got %v; want an error", in, got)
		}
	}
	f("")
	f("0")
	f("-5")
	f("10000")
	f("100,,200")
	f("1e3")
}
