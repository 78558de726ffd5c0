package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

// Every golden vector through the tool: valid ones come back byte-equal,
// invalid ones with their kind.
func TestVectorsThroughTool(t *testing.T) {
	raw, err := os.ReadFile("../../../tests/vectors/native.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf struct {
		Valid, Invalid []struct {
			Name, Record, Error string
			Fds                 int
			MaxRecord           int `json:"max_record"`
		}
	}
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	var in, want strings.Builder
	for _, v := range vf.Valid {
		fmt.Fprintf(&in, "%d %s\n", v.Fds, v.Record)
		fmt.Fprintf(&want, "ok %s\n", v.Record)
	}
	for _, v := range vf.Invalid {
		if v.MaxRecord != 0 {
			fmt.Fprintf(&in, "%d %s %d\n", v.Fds, v.Record, v.MaxRecord)
		} else {
			fmt.Fprintf(&in, "%d %s\n", v.Fds, v.Record)
		}
		fmt.Fprintf(&want, "err %s\n", v.Error)
	}
	var out bytes.Buffer
	if err := run(strings.NewReader(in.String()), &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != want.String() {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want.String())
	}
	if len(vf.Valid) == 0 || len(vf.Invalid) == 0 {
		t.Fatal("no vectors")
	}
}

func TestBadInputLine(t *testing.T) {
	for _, in := range []string{"x 00\n", "0 zz\n", "0 00 y\n", "\n"} {
		if err := run(strings.NewReader(in), &bytes.Buffer{}); err == nil {
			t.Fatalf("accepted %q", in)
		}
	}
}
