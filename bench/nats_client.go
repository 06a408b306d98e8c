package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsStream is the JetStream stream every workload uses: file storage, one
// replica, the server's defaults otherwise.
const natsStream = "BENCH"

// natsSubject is the subject of the i-th event: ev.<x|o>.<entity>, x for the
// 1% tagged events, so the filter subject ev.x.> selects what streamd's
// `include tag=x` does.
func natsSubject(i int) string {
	if tagged(i) {
		return "ev.x." + entityOf(i)
	}
	return "ev.o." + entityOf(i)
}

func connectNATS(ctx context.Context, addr string, d *countingDialer, opts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect("nats://"+addr, nats.SetCustomDialer(d), nats.Name("streamd-bench"))
	if err != nil {
		return nil, nil, fmt.Errorf("nats at %s: %w", addr, err)
	}
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: natsStream, Subjects: []string{"ev.>"}, Storage: jetstream.FileStorage, Replicas: 1,
	})
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("create stream %s: %w", natsStream, err)
	}
	return nc, js, nil
}

// publishNATS publishes spec.Events events with PublishAsync, at most
// spec.InFlight awaiting their ack (WithPublishAsyncMaxPending). Seconds is
// from the first publish to the last ack.
func publishNATS(ctx context.Context, spec clientSpec) (clientResult, error) {
	var (
		d       countingDialer
		failed  atomic.Int64
		errOnce sync.Once
		firstEr error
	)
	nc, js, err := connectNATS(ctx, spec.Addr, &d,
		jetstream.WithPublishAsyncMaxPending(max(spec.InFlight, 1)),
		jetstream.WithPublishAsyncTimeout(time.Minute),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			failed.Add(1)
			errOnce.Do(func() { firstEr = err })
		}))
	if err != nil {
		return clientResult{}, err
	}
	defer nc.Close()
	p := newPacer(spec, 1)
	begin := p.begin
	sent := 0
	for i := range spec.Events {
		ts, ok := p.wait(i)
		if !ok {
			break
		}
		sent++
		for {
			_, err := js.PublishAsync(natsSubject(i), newPayload(ts), jetstream.WithStallWait(time.Minute))
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) || ctx.Err() != nil {
				return clientResult{}, fmt.Errorf("publish %d: %w", i, err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return clientResult{}, fmt.Errorf("%w: %d publishes still awaiting their ack", errIncomplete, js.PublishAsyncPending())
	}
	res := clientResult{Events: int64(sent) - failed.Load(), Seconds: time.Since(begin).Seconds(), BytesIn: d.in.Load()}
	if firstEr != nil {
		return res, fmt.Errorf("%d publishes failed, the first: %w", failed.Load(), firstEr)
	}
	return res, nil
}

// subscribeNATS opens spec.Conns consumers, each on its own connection, and
// receives spec.Expect messages on each: an ordered consumer (kind ordered)
// or a durable pull consumer with explicit acks, each message acked (kind
// durable). Both use Consume with the client's defaults.
func subscribeNATS(ctx context.Context, spec clientSpec, ctl *control) (clientResult, error) {
	var d countingDialer
	subs := make([]*subscription, max(spec.Conns, 1))
	conns := make([]*nats.Conn, len(subs))
	ccs := make([]jetstream.ConsumeContext, len(subs))
	done := make([]chan struct{}, len(subs))
	defer func() {
		for k := range subs {
			if ccs[k] != nil {
				ccs[k].Stop()
			}
			if conns[k] != nil {
				conns[k].Close()
			}
		}
	}()
	deliver := jetstream.DeliverAllPolicy
	if spec.Latest {
		deliver = jetstream.DeliverNewPolicy
	}
	var filter []string
	if spec.Filter {
		filter = []string{"ev.x.>"}
	}
	for k := range subs {
		s := &subscription{}
		subs[k] = s
		done[k] = make(chan struct{})
		nc, js, err := connectNATS(ctx, spec.Addr, &d)
		if err != nil {
			return clientResult{}, err
		}
		conns[k] = nc
		s.start = time.Now()
		var cons jetstream.Consumer
		if spec.Kind == "durable" {
			cons, err = js.CreateOrUpdateConsumer(ctx, natsStream, jetstream.ConsumerConfig{
				Durable: fmt.Sprint("bench-", k), AckPolicy: jetstream.AckExplicitPolicy,
				DeliverPolicy: deliver, FilterSubjects: filter,
			})
		} else {
			cons, err = js.OrderedConsumer(ctx, natsStream, jetstream.OrderedConsumerConfig{
				DeliverPolicy: deliver, FilterSubjects: filter,
			})
		}
		if err != nil {
			return clientResult{}, fmt.Errorf("consumer: %w", err)
		}
		ack := spec.Kind == "durable"
		ccs[k], err = cons.Consume(func(m jetstream.Msg) {
			now := time.Now()
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.got >= spec.Expect {
				return
			}
			s.receive(now, m.Data(), spec.Latency)
			if ack {
				_ = m.Ack()
			}
			if s.got == spec.Expect {
				close(done[k])
			}
		}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			fmt.Fprintln(os.Stderr, "consume:", err)
		}))
		if err != nil {
			return clientResult{}, err
		}
		if err := nc.FlushWithContext(ctx); err != nil {
			return clientResult{}, err
		}
	}
	ctl.ready()
	finished := make(chan struct{})
	defer close(finished)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ended := watchEnd(subs, spec.Idle, spec.Latest, ctl, cancel, finished)
	var err error
	for k := range subs {
		select {
		case <-done[k]:
			if spec.Kind == "durable" {
				// The acks are sent without waiting; count the time until
				// the server has them.
				err = errors.Join(err, conns[k].FlushWithContext(ctx))
				subs[k].mu.Lock()
				subs[k].last = time.Now()
				subs[k].mu.Unlock()
			}
		case <-ctx.Done():
			if !ended() {
				err = errors.Join(err, ctx.Err())
			}
		}
	}
	for k := range subs {
		ccs[k].Stop()
	}
	return merge(subs, spec, d.in.Load()), err
}
