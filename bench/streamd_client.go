package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/publisher"
)

// publishStreamWindow is how many requests one PublishStream carries in
// flight: the server's default PublishInFlight.
const publishStreamWindow = 256

// The ways streamd is published to (clientSpec.Via).
const (
	viaPublisher = "publisher"
	viaStream    = "stream"
	viaUnary     = "unary"
)

func dialStreamd(addr string, d *countingDialer) (*grpc.ClientConn, error) {
	// The flow-control windows of the consumer library: the raw
	// subscriber reads as a consumer built on it does.
	return grpc.NewClient(addr, append(consumer.WindowDialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(d.DialContext),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))...)
}

// streamdEvents builds the events first..first+n-1, stamped with ts.
func streamdEvents(first, n int, ts time.Time) []*streamdv1.Event {
	evs := make([]*streamdv1.Event, n)
	for k := range evs {
		i := first + k
		e := &streamdv1.Event{EntityType: "device", EntityId: entityOf(i), EventType: "Measured", Payload: newPayload(ts)}
		if tagged(i) {
			e.Tags = []string{"x"}
		}
		evs[k] = e
	}
	return evs
}

// pacer spreads requests of batch events over time at rate events/s
// (rate 0: no pacing) and ends the run at stop (zero: never).
type pacer struct {
	begin time.Time
	rate  float64
	batch int
	stop  time.Time
}

func newPacer(spec clientSpec, batch int) pacer {
	p := pacer{begin: time.Now(), rate: spec.Rate, batch: batch}
	if spec.MaxDuration > 0 {
		p.stop = p.begin.Add(spec.MaxDuration)
	}
	return p
}

// wait sleeps until request r is due and returns the time it is stamped
// with: its scheduled start when paced (so a publisher that falls behind adds
// to the measured latency instead of hiding it), else now. ok is false once
// the run is over: request r is not to be sent.
func (p pacer) wait(r int) (ts time.Time, ok bool) {
	if p.rate <= 0 {
		now := time.Now()
		return now, p.stop.IsZero() || now.Before(p.stop)
	}
	due := p.begin.Add(time.Duration(float64(r*p.batch) / p.rate * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
	return due, p.stop.IsZero() || time.Now().Before(p.stop)
}

// publishStreamd publishes spec.Events events, spec.Batch a request, with
// spec.InFlight requests awaiting their ack at most, the way spec.Via says:
// with a publisher.Publisher, over PublishStream (several streams of
// publishStreamWindow when InFlight is larger) or with InFlight goroutines
// calling the unary Publish. Seconds is from the first send to the last ack.
func publishStreamd(ctx context.Context, spec clientSpec) (clientResult, error) {
	var d countingDialer
	cc, err := dialStreamd(spec.Addr, &d)
	if err != nil {
		return clientResult{}, err
	}
	defer cc.Close()
	client := streamdv1.NewEventStreamServiceClient(cc)
	if _, err := client.JournalInfo(ctx, &streamdv1.JournalInfoRequest{}); err != nil {
		return clientResult{}, fmt.Errorf("streamd at %s: %w", spec.Addr, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batch := max(spec.Batch, 1)
	requests := (spec.Events + batch - 1) / batch
	request := func(r int, ts time.Time) []*streamdv1.Event {
		return streamdEvents(r*batch, min(batch, spec.Events-r*batch), ts)
	}
	var (
		acked   atomic.Int64
		lastAck atomic.Int64
		errOnce sync.Once
		firstEr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstEr = err; cancel() })
	}
	ack := func(n int) {
		acked.Add(int64(n))
		lastAck.Store(time.Now().UnixNano())
	}
	p := newPacer(spec, batch)
	begin := p.begin
	var wg sync.WaitGroup
	switch spec.Via {
	case viaPublisher:
		if batch != 1 {
			return clientResult{}, fmt.Errorf("streamd via %s publishes one event at a time, not %d", spec.Via, batch)
		}
		wg.Go(func() {
			if err := publishWithPublisher(ctx, cc, spec, requests, p, request, ack); err != nil {
				fail(err)
			}
		})
	case viaUnary:
		var next atomic.Int64
		for range max(spec.InFlight, 1) {
			wg.Go(func() {
				for {
					r := int(next.Add(1)) - 1
					if r >= requests || ctx.Err() != nil {
						return
					}
					ts, ok := p.wait(r)
					if !ok {
						return
					}
					res, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: request(r, ts)})
					if err != nil {
						fail(err)
						return
					}
					ack(len(res.Appended))
				}
			})
		}
	case viaStream:
		streams := max((spec.InFlight+publishStreamWindow-1)/publishStreamWindow, 1)
		window := max((spec.InFlight+streams-1)/streams, 1)
		for k := range streams {
			wg.Go(func() {
				if err := publishOneStream(ctx, client, k, streams, requests, window, p, request, ack); err != nil {
					fail(err)
				}
			})
		}
	default:
		return clientResult{}, fmt.Errorf("streamd: unknown way to publish %q", spec.Via)
	}
	wg.Wait()
	res := clientResult{Events: acked.Load(), Seconds: float64(lastAck.Load()-begin.UnixNano()) / 1e9, BytesIn: d.in.Load()}
	if firstEr != nil {
		return res, firstEr
	}
	return res, nil
}

// publishWithPublisher publishes events 0..requests-1 one at a time with a
// publisher.Publisher, at most spec.InFlight awaiting their ack.
func publishWithPublisher(ctx context.Context, cc *grpc.ClientConn, spec clientSpec, requests int,
	p pacer, request func(int, time.Time) []*streamdv1.Event, ack func(int)) error {
	pub, err := publisher.New(ctx, cc, publisher.Options{})
	if err != nil {
		return err
	}
	slots := make(chan struct{}, max(spec.InFlight, 1))
	acks := make(chan *publisher.Ack, cap(slots))
	answered := make(chan error, 1)
	go func() {
		var first error
		for a := range acks {
			if _, err := a.Result(); err != nil {
				first = cmp.Or(first, err)
			} else {
				ack(1)
			}
			<-slots
		}
		answered <- first
	}()
	for r := range requests {
		ts, ok := p.wait(r)
		if !ok || ctx.Err() != nil {
			break
		}
		slots <- struct{}{}
		acks <- pub.PublishAsync(request(r, ts)[0])
	}
	close(acks)
	return errors.Join(<-answered, pub.Close())
}

// publishOneStream sends requests k, k+step, … over one PublishStream with
// at most window awaiting their answer.
func publishOneStream(ctx context.Context, client streamdv1.EventStreamServiceClient, k, step, requests, window int,
	p pacer, request func(int, time.Time) []*streamdv1.Event, ack func(int)) error {
	st, err := client.PublishStream(ctx)
	if err != nil {
		return err
	}
	slots := make(chan struct{}, window)
	recvErr := make(chan error, 1)
	go func() {
		for {
			res, err := st.Recv()
			if errors.Is(err, io.EOF) {
				recvErr <- nil
				return
			}
			if err != nil {
				recvErr <- err
				return
			}
			if res.Code != 0 {
				recvErr <- fmt.Errorf("publish refused: code %d: %s", res.Code, res.Message)
				return
			}
			ack(len(res.Appended))
			<-slots
		}
	}()
	for r := k; r < requests; r += step {
		ts, ok := p.wait(r)
		if !ok {
			break
		}
		select {
		case slots <- struct{}{}:
		case err := <-recvErr:
			return errors.Join(err, errIncomplete)
		}
		if err := st.Send(&streamdv1.PublishStreamRequest{Events: request(r, ts)}); err != nil {
			if errors.Is(err, io.EOF) {
				_, err = st.Recv()
			}
			return err
		}
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	return <-recvErr
}

// subscribeStreamd opens spec.Conns subscriptions, each on its own
// connection, and receives spec.Expect events on each: with the raw
// Subscribe stream (kind raw) or with consumer.Consumer in AtLeastOnce mode
// with an offsets store (kind consumer).
func subscribeStreamd(ctx context.Context, spec clientSpec, ctl *control) (clientResult, error) {
	var filter []*streamdv1.FilterCriterion
	if spec.Filter {
		c, err := filters.Parse("include tag=x", time.Now())
		if err != nil {
			return clientResult{}, err
		}
		filter = append(filter, c)
	}
	policy := streamdv1.StartPolicy_START_POLICY_EARLIEST
	if spec.Latest {
		policy = streamdv1.StartPolicy_START_POLICY_LATEST
	}
	var d countingDialer
	subs := make([]*subscription, max(spec.Conns, 1))
	for k := range subs {
		subs[k] = &subscription{}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		opened, done sync.WaitGroup
		errs         = make(chan error, len(subs))
		finished     = make(chan struct{})
	)
	ended := watchEnd(subs, spec.Idle, spec.Latest, ctl, cancel, finished)
	for k, s := range subs {
		opened.Add(1)
		done.Go(func() {
			var err error
			if spec.Kind == "consumer" {
				err = consumeStreamd(ctx, spec, k, s, &d, filter, policy, opened.Done)
			} else {
				err = subscribeRaw(ctx, spec, k, s, &d, filter, policy, opened.Done)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	opened.Wait()
	ctl.ready()
	done.Wait()
	close(finished)
	close(errs)
	res := merge(subs, spec, d.in.Load())
	if ended() {
		return res, nil // the harness compares what arrived with what was published
	}
	var err error
	for e := range errs {
		err = errors.Join(err, e)
	}
	return res, err
}

func subscribeRaw(ctx context.Context, spec clientSpec, k int, s *subscription, d *countingDialer,
	filter []*streamdv1.FilterCriterion, policy streamdv1.StartPolicy, opened func()) error {
	openedOnce := sync.OnceFunc(opened)
	defer openedOnce()
	cc, err := dialStreamd(spec.Addr, d)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.start = time.Now()
	st, err := streamdv1.NewEventStreamServiceClient(cc).Subscribe(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
		ConsumerName: fmt.Sprint("bench-", k), StartPolicy: policy, Filter: filter}}}); err != nil {
		return err
	}
	m, err := st.Recv()
	if err != nil {
		return err
	}
	if m.GetHello() == nil {
		return fmt.Errorf("streamd: first message is not a Hello: %v", m)
	}
	openedOnce()
	for s.got < spec.Expect {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		evs := m.GetEvents().GetEvents()
		if len(evs) == 0 {
			continue
		}
		now := time.Now()
		for _, e := range evs {
			s.receive(now, e.Payload, spec.Latency)
		}
	}
	return nil
}

func consumeStreamd(ctx context.Context, spec clientSpec, k int, s *subscription, d *countingDialer,
	filter []*streamdv1.FilterCriterion, policy streamdv1.StartPolicy, opened func()) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := offsets.Open(filepath.Join(spec.Dir, fmt.Sprint("offsets-", k)), offsets.Options{Logger: quiet})
	if err != nil {
		opened()
		return err
	}
	defer store.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, err := consumer.New(consumer.Options{
		Producers:   []string{spec.Addr},
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(d.DialContext)},
		Name:        fmt.Sprint("bench-", k),
		Store:       store,
		Filter:      filter,
		StartPolicy: policy,
		Logger:      quiet,
		Handler: func(_ context.Context, e *streamdv1.Event) error {
			if s.got < spec.Expect {
				s.receive(time.Now(), e.Payload, spec.Latency)
				if s.got == spec.Expect {
					cancel()
				}
			}
			return nil
		},
	})
	if err != nil {
		opened()
		return err
	}
	opened() // the consumer package does not say when its stream is open: use it for catch-up only
	s.start = time.Now()
	err = c.Run(ctx)
	s.last = time.Now() // Run returned: the final position save is included
	return err
}

// DialContext dials TCP and counts what the connection reads.
func (d *countingDialer) DialContext(ctx context.Context, address string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, in: &d.in}, nil
}
