package console

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Path is where the console is served: mount Handler on it.
const Path = "/console/"

//go:embed assets
var assets embed.FS

// Grant is what one bearer token may do in the console.
type Grant struct {
	// All is the "*" grant: every stream and every action.
	All bool
	// Streams it may read; any one opens the read-only views.
	Streams []string
}

func (g Grant) reads() bool { return g.All || len(g.Streams) > 0 }

func (g Grant) stream(name string) bool {
	if g.All {
		return true
	}
	for _, s := range g.Streams {
		if s == name {
			return true
		}
	}
	return false
}

// Link is a replication streamd runs: the consumer that copies the stream
// of another region into the local journal.
type Link struct {
	Consumer string   `json:"consumer"` // its name in the AdminService
	From     string   `json:"from"`     // the source region
	Addrs    []string `json:"addrs"`
	Stream   string   `json:"stream"`
	Filter   []string `json:"filter"` // criteria as text
}

// EntityType is one entity type of the region's config.
type EntityType struct {
	Name string `json:"name"` // "": every type the config does not list (its default mode)
	Mode string `json:"mode"`
	// Configured is the primary (pinned) or home (request-region) of the
	// config, every entity's first owner; "" for the other modes.
	Configured string `json:"configured"`
	// OnDemand is set for a type replicated on demand (replication:
	// on-demand): its entities reach this region while it has interest in
	// them, its SummaryTypes always; Inactivity after the last use here
	// the interest in an entity expires.
	OnDemand     bool          `json:"on_demand"`
	SummaryTypes []string      `json:"summary_types"`
	Inactivity   time.Duration `json:"inactivity_ns"`
}

// Options configure a Console. Conn, Info and Gatherer are required.
type Options struct {
	// Conn reaches streamd's EventStreamService, AdminService,
	// AggregateService, InterestService and (with entity types)
	// PrimaryService without authentication; the console authorizes each
	// request itself.
	Conn grpc.ClientConnInterface
	// Info returns the journal's bounds and size.
	Info func() journal.Info
	// Err returns the journal's failure (nil while healthy).
	Err func() error
	// Gatherer holds streamd's metrics (appends, fsync, stream lag).
	Gatherer prometheus.Gatherer
	// DataDir is the journal directory, whose bytes on disk and free space
	// the overview shows ("": not shown).
	DataDir string
	// Region is this region's name ("" for none).
	Region string
	// Links are the replications streamd runs, EntityTypes its entity
	// types; both shown on the regions page, the entity types with their
	// primary now (PrimaryService.GetPrimary).
	Links       []Link
	EntityTypes []EntityType
	// Tokens returns a bearer token's grant, false for an unknown token.
	// nil serves the console without authentication, to loopback Hosts only.
	Tokens func(token string) (Grant, bool)
	// Interval between samples (default 1s); History is how long samples
	// are kept for the charts (default 5m).
	Interval, History time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// ErrInvalidOptions is wrapped by the errors of New for a missing or
// nonsensical option.
var ErrInvalidOptions = errors.New("console: invalid options")

// Validate names the first field that is missing or nonsensical.
func (o Options) Validate() error {
	switch {
	case o.Conn == nil:
		return fmt.Errorf("%w: Options.Conn is nil", ErrInvalidOptions)
	case o.Info == nil:
		return fmt.Errorf("%w: Options.Info is nil", ErrInvalidOptions)
	case o.Gatherer == nil:
		return fmt.Errorf("%w: Options.Gatherer is nil", ErrInvalidOptions)
	case o.Interval < 0 || o.History < 0:
		return fmt.Errorf("%w: Options.Interval %v and Options.History %v must not be negative", ErrInvalidOptions, o.Interval, o.History)
	}
	return nil
}

// Console serves the console's pages and its JSON and Server-Sent Events
// endpoints. Its methods are safe for concurrent use.
type Console struct {
	opts       Options
	log        *slog.Logger
	events     streamdv1.EventStreamServiceClient
	admin      streamdv1.AdminServiceClient
	primaries  streamdv1.PrimaryServiceClient
	aggregates streamdv1.AggregateServiceClient
	interests  streamdv1.InterestServiceClient
	mux        *http.ServeMux
	key        []byte // signs CSRF tokens

	ctx    context.Context // done once Close is called
	cancel context.CancelFunc
	done   chan struct{} // closed when the sampler has stopped
	once   sync.Once

	sessions sessions
	samples  sampler
}

// New returns a Console that samples until Close.
func New(o Options) (*Console, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if o.History == 0 {
		o.History = 5 * time.Minute
	}
	if o.Err == nil {
		o.Err = func() error { return nil }
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := &Console{
		opts:       o,
		log:        o.Logger,
		events:     streamdv1.NewEventStreamServiceClient(o.Conn),
		admin:      streamdv1.NewAdminServiceClient(o.Conn),
		primaries:  streamdv1.NewPrimaryServiceClient(o.Conn),
		aggregates: streamdv1.NewAggregateServiceClient(o.Conn),
		interests:  streamdv1.NewInterestServiceClient(o.Conn),
		key:        make([]byte, 32),
		done:       make(chan struct{}),
	}
	rand.Read(c.key)
	c.sessions.byID = map[string]session{}
	c.samples.changed = make(chan struct{})
	c.ctx, c.cancel = context.WithCancel(context.Background())
	static, _ := fs.Sub(assets, "assets")
	c.mux = http.NewServeMux()
	c.mux.Handle("GET "+Path, http.StripPrefix(Path, http.FileServerFS(static)))
	c.mux.HandleFunc("GET "+Path+"api/session", c.session)
	c.mux.HandleFunc("POST "+Path+"api/login", c.login)
	c.mux.HandleFunc("POST "+Path+"api/logout", c.act(false, c.logout))
	c.mux.HandleFunc("GET "+Path+"api/live", c.read(c.live))
	c.mux.HandleFunc("GET "+Path+"api/parse", c.read(c.parse))
	c.mux.HandleFunc("GET "+Path+"api/tail", c.read(c.tail))
	c.mux.HandleFunc("POST "+Path+"api/offsets/move", c.act(true, c.moveOffsets))
	c.mux.HandleFunc("POST "+Path+"api/filters/update", c.act(true, c.updateFilter))
	c.mux.HandleFunc("POST "+Path+"api/primary/failover", c.act(true, c.failover))
	go c.sample()
	return c, nil
}

// Handler serves the console under Path.
func (c *Console) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.opts.Tokens == nil && !loopbackHost(r.Host) {
			httpError(w, http.StatusForbidden, fmt.Sprintf("console: host %q is not a loopback name: without --auth-token-file the console answers only on localhost, 127.0.0.1 or [::1]", r.Host))
			return
		}
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		c.mux.ServeHTTP(w, r)
	})
}

// Close stops the sampler and ends the live streams; it is idempotent.
func (c *Console) Close() error {
	c.once.Do(func() {
		c.cancel()
		<-c.done
	})
	return nil
}

// httpError answers {"error": msg} with code.
func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
