// Command microclient checks a NATS micro service (ADR-32) from outside, the
// way a Go client does: it asks $SRV.PING, $SRV.INFO and $SRV.STATS on the
// subjects built by the nats.go micro package, decodes the answers strictly
// (unknown fields are an error) and prints what it decoded as JSON. With
// -request it also sends one request and prints the micro error headers.
//
// Build (offline, Debian's golang-github-nats-io-go-nats-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o microclient ./test/go/microclient
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// The io.nats.micro.v1 response types, field for field as in nats.go's
// micro/service.go since v1.23 (ServiceIdentity, Ping, Info, EndpointInfo,
// Stats, EndpointStats). They are declared here because the package installed
// may predate v1 (Debian bookworm ships nats.go 1.22.1, whose Info and Stats
// have the pre-ADR-32 single-endpoint shape); Ping's identity fields and the
// subjects and header names still come from the installed micro package.
type serviceIdentity struct {
	Name     string            `json:"name"`
	ID       string            `json:"id"`
	Version  string            `json:"version"`
	Metadata map[string]string `json:"metadata"`
}

type ping struct {
	serviceIdentity
	Type string `json:"type"`
}

type endpointInfo struct {
	Name       string            `json:"name"`
	Subject    string            `json:"subject"`
	QueueGroup string            `json:"queue_group"`
	Metadata   map[string]string `json:"metadata"`
}

type info struct {
	serviceIdentity
	Type        string         `json:"type"`
	Description string         `json:"description"`
	Endpoints   []endpointInfo `json:"endpoints"`
}

type endpointStats struct {
	Name                  string          `json:"name"`
	Subject               string          `json:"subject"`
	QueueGroup            string          `json:"queue_group"`
	NumRequests           int             `json:"num_requests"`
	NumErrors             int             `json:"num_errors"`
	LastError             string          `json:"last_error"`
	ProcessingTime        time.Duration   `json:"processing_time"`
	AverageProcessingTime time.Duration   `json:"average_processing_time"`
	Data                  json.RawMessage `json:"data,omitempty"`
}

type stats struct {
	serviceIdentity
	Type      string           `json:"type"`
	Started   time.Time        `json:"started"`
	Endpoints []*endpointStats `json:"endpoints"`
}

type requestResult struct {
	Code        string          `json:"code"`
	Description string          `json:"description"`
	Body        json.RawMessage `json:"body"`
}

type output struct {
	// identities as the installed package's micro.Ping decodes them
	Ping    []micro.Ping   `json:"ping"`
	PingV1  []ping         `json:"ping_v1"`
	Info    []info         `json:"info"`
	Stats   []stats        `json:"stats"`
	Request *requestResult `json:"request,omitempty"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "microclient: "+format+"\n", args...)
	os.Exit(1)
}

// collect publishes one request and gathers up to n answers within wait.
func collect(nc *nats.Conn, subject string, n int, wait time.Duration) [][]byte {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		fail("subscribe: %v", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		fail("publish %s: %v", subject, err)
	}
	var out [][]byte
	deadline := time.Now().Add(wait)
	for len(out) < n {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			break
		}
		msg, err := sub.NextMsg(remaining)
		if err != nil {
			break
		}
		if len(msg.Data) > 0 {
			out = append(out, msg.Data)
		}
	}
	if len(out) < n {
		fail("%s: %d answers, expected %d", subject, len(out), n)
	}
	return out
}

// strict decodes JSON, refusing fields the type does not declare.
func strict(data []byte, v interface{}) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		fail("decode %T from %s: %v", v, data, err)
	}
}

func control(verb micro.Verb, name, id string) string {
	subject, err := micro.ControlSubject(verb, name, id)
	if err != nil {
		fail("control subject: %v", err)
	}
	return subject
}

func main() {
	url := flag.String("url", nats.DefaultURL, "NATS server URL")
	name := flag.String("name", "", "service name")
	expect := flag.Int("expect", 1, "instances of the service expected to answer")
	request := flag.String("request", "", "optional: a subject to send one request to")
	payload := flag.String("payload", "{}", "the request body")
	flag.Parse()
	if *name == "" {
		fail("-name is required")
	}
	nc, err := nats.Connect(*url, nats.Name("microclient"))
	if err != nil {
		fail("connect: %v", err)
	}
	defer nc.Close()
	wait := 3 * time.Second
	var out output

	// PING the service by name; decode each answer with the installed micro.Ping and strictly as v1
	for _, data := range collect(nc, control(micro.PingVerb, *name, ""), *expect, wait) {
		var p micro.Ping
		if err := json.Unmarshal(data, &p); err != nil {
			fail("decode micro.Ping: %v", err)
		}
		var v1 ping
		strict(data, &v1)
		out.Ping = append(out.Ping, p)
		out.PingV1 = append(out.PingV1, v1)
	}
	// INFO for all services (ours among them), then STATS of each instance by id
	for _, data := range collect(nc, control(micro.InfoVerb, "", ""), *expect, wait) {
		var i info
		strict(data, &i)
		if i.Name == *name {
			out.Info = append(out.Info, i)
		}
	}
	for _, p := range out.PingV1 {
		var s stats
		strict(collect(nc, control(micro.StatsVerb, *name, p.ID), 1, wait)[0], &s)
		out.Stats = append(out.Stats, s)
	}
	if *request != "" {
		msg, err := nc.Request(*request, []byte(*payload), wait)
		if err != nil {
			fail("request %s: %v", *request, err)
		}
		out.Request = &requestResult{
			Code:        msg.Header.Get(micro.ErrorCodeHeader),
			Description: msg.Header.Get(micro.ErrorHeader),
			Body:        msg.Data,
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fail("encode: %v", err)
	}
}
