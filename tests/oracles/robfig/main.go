// Command robfig answers "when does this cron spec fire next?" with github.com/robfig/cron v3, the
// parser and scheduler Dkron uses, so that tests/unit/test_cron_robfig.py can compare dkron-nats's own
// parser with it over thousands of generated specs in one process.
//
// Input on stdin, one JSON object per line:
//
//	{"zone": "Europe/Berlin", "spec": "0 0 0 */2 * MON", "starts": [1718000000, 1718086400]}
//
// The spec is parsed the way Dkron parses a job's schedule: robfig's parser with the options
// Second|Minute|Hour|Dom|Month|Dow|Descriptor, with "CRON_TZ=<zone> " put in front as Dkron's scheduler
// does for a job with a time zone (unless the spec names its own zone). Output, one line per input line:
//
//	{"error": "<the parser's message>"}       the spec does not parse
//	{"next": [1718150400, null]}              Next(start) for each start, in Unix seconds; null for the
//	                                          zero time (no fire within robfig's five-year search)
//
// Build it offline in GOPATH mode against Debian's golang-github-robfig-cron-dev (see the test module).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/robfig/cron"
)

// Dkron's extcron.NewParser uses these options: six fields, seconds mandatory, descriptors allowed.
var dkronParser = cron.NewParser(
	cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor,
)

type question struct {
	Zone   string  `json:"zone"`
	Spec   string  `json:"spec"`
	Starts []int64 `json:"starts"`
}

type answer struct {
	Error *string  `json:"error,omitempty"`
	Next  []*int64 `json:"next"`
}

func withZone(zone, spec string) string {
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return spec
	}
	return "CRON_TZ=" + zone + " " + spec
}

// parse recovers from the panics robfig's parser has on some malformed zone prefixes.
func parse(spec string) (schedule cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return dkronParser.Parse(spec)
}

func answerOne(q question) answer {
	schedule, err := parse(withZone(q.Zone, q.Spec))
	if err != nil {
		message := err.Error()
		return answer{Error: &message}
	}
	next := make([]*int64, len(q.Starts))
	for i, start := range q.Starts {
		fire := schedule.Next(time.Unix(start, 0).UTC())
		if !fire.IsZero() {
			unix := fire.Unix()
			next[i] = &unix
		}
	}
	return answer{Next: next}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	encoder := json.NewEncoder(out)
	for in.Scan() {
		var q question
		if err := json.Unmarshal(in.Bytes(), &q); err != nil {
			fmt.Fprintf(os.Stderr, "robfig oracle: bad input line %q: %v\n", in.Text(), err)
			os.Exit(2)
		}
		if err := encoder.Encode(answerOne(q)); err != nil {
			fmt.Fprintf(os.Stderr, "robfig oracle: %v\n", err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "robfig oracle: reading stdin: %v\n", err)
		os.Exit(2)
	}
}
