// Command procsync-codec runs records through the Go codec, for
// differential tests against other implementations. Each input line is
//
//	NFDS HEX [MAX_RECORD]
//
// (HEX may be empty for an empty record) and each output line is either
//
//	ok HEX      the record decoded; HEX is its canonical re-encoding
//	err KIND    the record was rejected with this stable error kind
//
// A record that decodes but cannot be re-encoded (its canonical form
// exceeds MAX_RECORD) prints "ok-encode-err KIND". Malformed input lines
// stop the program with status 2.
package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/procsync/procsync/go/procsync"
)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "procsync-codec:", err)
		os.Exit(2)
	}
}

func run(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 2*procsync.MaxRecordCeiling+64)
	w := bufio.NewWriter(out)
	defer w.Flush()
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || len(f) > 3 {
			return fmt.Errorf("line %d: want NFDS HEX [MAX_RECORD]", line)
		}
		nfds, err := strconv.Atoi(f[0])
		if err != nil || nfds < 0 {
			return fmt.Errorf("line %d: bad NFDS %q", line, f[0])
		}
		var rec []byte
		if len(f) > 1 {
			if rec, err = hex.DecodeString(f[1]); err != nil {
				return fmt.Errorf("line %d: %w", line, err)
			}
		}
		lim := procsync.DefaultLimits()
		if len(f) > 2 {
			n, err := strconv.Atoi(f[2])
			if err != nil {
				return fmt.Errorf("line %d: bad MAX_RECORD %q", line, f[2])
			}
			lim = procsync.NewLimits(n)
		}
		msg, err := procsync.Decode(rec, nfds, lim)
		if err != nil {
			k, _ := procsync.KindOf(err)
			fmt.Fprintln(w, "err", k)
			continue
		}
		enc, err := procsync.Encode(nil, msg, nfds == 1, lim)
		if err != nil {
			k, _ := procsync.KindOf(err)
			fmt.Fprintln(w, "ok-encode-err", k)
			continue
		}
		fmt.Fprintln(w, "ok", hex.EncodeToString(enc))
	}
	return sc.Err()
}
