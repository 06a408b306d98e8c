package publisher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// ErrClosed is the error of a publish made after Close.
var ErrClosed = errors.New("publisher: closed")

// ErrTooLarge is the error of an event over the server's limits, which
// PublishAsync refuses alone without sending it. Its gRPC code is
// InvalidArgument, as for an event the server refuses.
var ErrTooLarge = errors.New("publisher: event over the server's limits")

// invalidEvent is an event PublishAsync refuses: an InvalidArgument status
// that wraps what is wrong with it.
type invalidEvent struct{ error }

func (e invalidEvent) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}
func (e invalidEvent) Unwrap() error { return e.error }

// Options configure a Publisher. Zero fields take the defaults.
type Options struct {
	// MaxBatchEvents bounds the events of one request; default 1000.
	MaxBatchEvents int
	// MaxBatchBytes bounds one request, encoded; default 1 MiB (an event
	// larger than it goes alone). A request also stays within the server's
	// message limit, whatever this says.
	MaxBatchBytes int
	// MaxInFlight is how many requests may await their answer; default 8.
	MaxInFlight int
}

// ErrInvalidOptions is wrapped by every error of Options.Validate.
var ErrInvalidOptions = errors.New("publisher: invalid options")

// Validate refuses negative bounds: every one, the errors joined; each wraps
// ErrInvalidOptions.
func (o Options) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{{"MaxBatchEvents", o.MaxBatchEvents}, {"MaxBatchBytes", o.MaxBatchBytes}, {"MaxInFlight", o.MaxInFlight}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%w: Options.%s is %d, not at least 0", ErrInvalidOptions, f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	if o.MaxBatchEvents == 0 {
		o.MaxBatchEvents = 1000
	}
	if o.MaxBatchBytes == 0 {
		o.MaxBatchBytes = 1 << 20
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = 8
	}
	return o
}

// Appended is where a published event landed in the journal.
type Appended struct {
	Offset, SeqNr uint64
	// Region and Version, for an event of a pinned or request-region
	// entity type: the region whose journal took it (Offset and SeqNr are
	// in that journal) and its version in the entity's one history;
	// otherwise "" and 0.
	Region  string
	Version uint64
}

// An Ack is the answer to one publish: Done is closed once it is known.
type Ack struct {
	raw      []byte // the event, encoded
	done     chan struct{}
	appended Appended
	err      error
}

// Done is closed once the publish is answered.
func (a *Ack) Done() <-chan struct{} { return a.done }

// Result is where the event landed, or why it was not appended (a gRPC
// status error for a refused event). It blocks until Done.
func (a *Ack) Result() (Appended, error) {
	<-a.done
	return a.appended, a.err
}

func (a *Ack) resolve(res Appended, err error) {
	a.appended, a.err = res, err
	close(a.done)
}

// limits are the server's, from its PublishStream response header.
type limits struct {
	payload int // largest payload
	event   int // largest event, encoded, that a request may carry
	request int // largest request, encoded: min(MaxBatchBytes, the server's message limit)
}

// Publisher publishes over one PublishStream. Its methods are safe for
// concurrent use.
type Publisher struct {
	opts     Options
	limits   limits
	stream   grpc.ClientStream
	cancel   context.CancelFunc
	queue    chan *Ack     // publishes not sent yet; closed by Close
	slots    chan struct{} // one per request awaiting its answer
	inflight chan []*Ack   // the requests awaiting their answer, in order; closed by the sender
	failed   chan struct{} // closed with err set
	finished chan struct{} // closed once both loops are done

	mu     sync.RWMutex // held to enqueue; Close takes it to close queue
	closed bool

	failOnce sync.Once
	err      error
}

// New opens a PublishStream on cc and waits for the server's answer header,
// which says its limits. The stream lives until Close, a stream failure, or
// the end of ctx.
func New(ctx context.Context, cc grpc.ClientConnInterface, opts Options) (*Publisher, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(ctx)
	stream, err := cc.NewStream(ctx, &publishStreamDesc, streamdv1.EventStreamService_PublishStream_FullMethodName,
		grpc.ForceCodec(frameCodec{}))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("publisher: opening the publish stream: %w", err)
	}
	lim, err := serverLimits(stream, opts.MaxBatchBytes)
	if err != nil {
		cancel()
		return nil, err
	}
	p := &Publisher{
		opts:     opts,
		limits:   lim,
		stream:   stream,
		cancel:   cancel,
		queue:    make(chan *Ack, opts.MaxBatchEvents),
		slots:    make(chan struct{}, opts.MaxInFlight),
		inflight: make(chan []*Ack, opts.MaxInFlight),
		failed:   make(chan struct{}),
		finished: make(chan struct{}),
	}
	go p.send()
	go func() {
		p.receive() // returns once the sender is done too
		cancel()
		close(p.finished)
	}()
	return p, nil
}

// PublishAsync encodes e, queues it and returns its Ack at once (it waits
// only while MaxBatchEvents publishes are already waiting to be sent); e
// may be reused once it returns. The journal assigns the event's offset,
// seq_nr (unless set: then it is the one expected), slice and timestamp. An
// event that cannot be encoded (a string that is not UTF-8) or is over the
// server's limits (ErrTooLarge) is refused here with InvalidArgument, and
// only it: it is not sent.
func (p *Publisher) PublishAsync(e *streamdv1.Event) *Ack {
	a := &Ack{done: make(chan struct{})}
	raw, err := proto.Marshal(e)
	if err != nil {
		a.resolve(Appended{}, invalidEvent{fmt.Errorf("publisher: the event cannot be encoded: %w", err)})
		return a
	}
	if len(raw) > p.limits.event || len(e.GetPayload()) > p.limits.payload {
		a.resolve(Appended{}, invalidEvent{fmt.Errorf("%w: %d bytes encoded with a payload of %d bytes; the server takes an event of at most %d bytes encoded, its payload at most %d bytes (streamd --max-batch-bytes, --max-payload-bytes); it was not sent",
			ErrTooLarge, len(raw), len(e.GetPayload()), p.limits.event, p.limits.payload)})
		return a
	}
	a.raw = raw
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		a.resolve(Appended{}, ErrClosed)
		return a
	}
	p.queue <- a // the sender always takes it, failed or not
	return a
}

// Publish publishes e and waits for its answer. If ctx ends first, the
// publish is not withdrawn: it may still be appended.
func (p *Publisher) Publish(ctx context.Context, e *streamdv1.Event) (Appended, error) {
	a := p.PublishAsync(e)
	select {
	case <-a.done:
		return a.appended, a.err
	case <-ctx.Done():
		return Appended{}, fmt.Errorf("publisher: stopped waiting for the answer (the event may still be appended): %w", ctx.Err())
	}
}

// Close stops taking publishes, waits until every publish made before it is
// answered, and closes the stream (to stop waiting for a server that does
// not answer, end the context given to New). It returns the stream's
// failure, if it failed. Close is idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.queue)
	}
	p.mu.Unlock()
	<-p.finished
	if errors.Is(p.err, ErrClosed) {
		return nil
	}
	return p.err
}

// Err is the stream's failure once it failed (the Publisher then answers
// every publish with an error: Close it and make a new one), nil while it
// works.
func (p *Publisher) Err() error {
	select {
	case <-p.failed:
		return p.err
	default:
		return nil
	}
}

// fail records the stream's failure (the first one counts) and ends it.
func (p *Publisher) fail(err error) {
	p.failOnce.Do(func() {
		p.err = err
		close(p.failed)
		p.cancel()
	})
}

// send takes the queued publishes, in order, and sends them in requests of
// what is waiting once a request may be sent.
func (p *Publisher) send() {
	defer close(p.inflight)
	var carry *Ack // taken from the queue but not in the last request
	for {
		first := carry
		carry = nil
		if first == nil {
			var ok bool
			if first, ok = <-p.queue; !ok {
				break
			}
		}
		select {
		case p.slots <- struct{}{}:
		case <-p.failed:
			first.resolve(Appended{}, p.failure())
			continue
		}
		batch, size := []*Ack{first}, requestTail+eventSize(first.raw)
	gather:
		for len(batch) < p.opts.MaxBatchEvents {
			select {
			case a, ok := <-p.queue:
				if !ok {
					break gather
				}
				if size+eventSize(a.raw) > p.limits.request {
					carry = a
					break gather
				}
				batch, size = append(batch, a), size+eventSize(a.raw)
			default:
				break gather
			}
		}
		p.inflight <- batch // before Send: its answer may come at once
		// On io.EOF the server ended the stream: the receiver gets why from
		// Recv. Either way the receiver answers the batch.
		if err := p.stream.SendMsg(encodeRequest(batch, size)); err != nil && !errors.Is(err, io.EOF) {
			p.fail(fmt.Errorf("publisher: sending: %w", err))
		}
	}
	select {
	case <-p.failed:
	default:
		if err := p.stream.CloseSend(); err != nil {
			p.fail(fmt.Errorf("publisher: closing the stream: %w", err))
		}
	}
}

// receive answers the requests in flight, in order, and once the stream
// ends answers whatever is still in flight with the failure.
func (p *Publisher) receive() {
	for {
		resp := new(streamdv1.PublishStreamResponse)
		if err := p.stream.RecvMsg(resp); err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrClosed
			} else {
				err = fmt.Errorf("publisher: stream failed: %w", err)
			}
			p.fail(err)
			break
		}
		batch, ok := <-p.inflight
		if !ok || len(resp.Appended) != len(batch) && resp.Code == 0 {
			p.fail(fmt.Errorf("publisher: the server answered a request of %d events with %d results (an older server that does not know PublishStreamRequest.separate_appends?)", len(batch), len(resp.Appended)))
			answerAll(batch, p.failure())
			break
		}
		for i, a := range batch {
			if resp.Code != 0 {
				a.resolve(Appended{}, status.Error(codes.Code(resp.Code), resp.Message))
				continue
			}
			r := resp.Appended[i]
			if r.Code != 0 {
				a.resolve(Appended{}, status.Error(codes.Code(r.Code), r.Message))
				continue
			}
			a.resolve(Appended{Offset: r.Offset, SeqNr: r.SeqNr, Region: r.Region, Version: r.Version}, nil)
		}
		<-p.slots
	}
	inFlight := fmt.Errorf("publisher: the stream ended with the publish in flight; it may or may not have been appended: %w", p.failure())
	for batch := range p.inflight {
		answerAll(batch, inFlight)
	}
}

func answerAll(batch []*Ack, err error) {
	for _, a := range batch {
		a.resolve(Appended{}, err)
	}
}

// failure is the stream's failure; call it only once failed is closed.
func (p *Publisher) failure() error {
	<-p.failed
	return p.err
}

var publishStreamDesc = grpc.StreamDesc{StreamName: "PublishStream", ServerStreams: true, ClientStreams: true}

// Field numbers of PublishStreamRequest (streamd.proto).
const (
	fieldEvents          protowire.Number = 1
	fieldSeparateAppends protowire.Number = 2
)

// requestTail is the encoded separate_appends field that ends a request.
const requestTail = 2

// eventSize is the encoded size of an event in a request.
func eventSize(raw []byte) int {
	return protowire.SizeTag(fieldEvents) + protowire.SizeBytes(len(raw))
}

// serverLimits reads the server's limits from the stream's answer header
// and bounds a request by them and by maxBatch.
func serverLimits(stream grpc.ClientStream, maxBatch int) (limits, error) {
	md, err := stream.Header()
	if err == nil && md == nil { // the stream ended before its header: RecvMsg says why
		if err = stream.RecvMsg(new(streamdv1.PublishStreamResponse)); err == nil {
			err = errors.New("an answer came without a header")
		}
	}
	if err != nil {
		return limits{}, fmt.Errorf("publisher: opening the publish stream: %w", err)
	}
	var vals [3]int
	for i, key := range []string{headerMaxPayloadBytes, headerMaxEventBytes, headerMaxMessageBytes} {
		v := md.Get(key)
		n := 0
		if len(v) == 1 {
			n, _ = strconv.Atoi(v[0])
		}
		if n <= 0 {
			return limits{}, fmt.Errorf("publisher: the server's PublishStream header has %s %q, not one positive number: it is not a streamd that says its limits", key, v)
		}
		vals[i] = n
	}
	msg := vals[2]
	// An event alone in a request: its tag and length (at most those of a
	// message-sized one) and requestTail must fit the message too.
	alone := msg - requestTail - protowire.SizeTag(fieldEvents) - protowire.SizeVarint(uint64(msg))
	return limits{payload: vals[0], event: min(vals[1], alone), request: min(maxBatch, msg)}, nil
}

// The keys of PublishStream's answer header that carry the server's limits
// (streamd.proto).
const (
	headerMaxPayloadBytes = "streamd-max-payload-bytes"
	headerMaxEventBytes   = "streamd-max-event-bytes"
	headerMaxMessageBytes = "streamd-max-message-bytes"
)

// frame is a message the publisher encoded itself: each event is encoded
// once, by PublishAsync, and a request is their concatenation.
type frame []byte

// encodeRequest encodes a PublishStreamRequest with separate_appends set,
// carrying the batch's events (size bytes in all).
func encodeRequest(batch []*Ack, size int) frame {
	b := make([]byte, 0, size)
	for _, a := range batch {
		b = protowire.AppendTag(b, fieldEvents, protowire.BytesType)
		b = protowire.AppendBytes(b, a.raw)
	}
	b = protowire.AppendTag(b, fieldSeparateAppends, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

// frameCodec sends frames as they are and everything else, answers
// included, as protobuf. The content-subtype stays proto.
type frameCodec struct{}

func (frameCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case frame:
		return m, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("publisher: cannot encode %T", v)
}

func (frameCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("publisher: cannot decode into %T", v)
	}
	return proto.Unmarshal(data, m)
}

func (frameCodec) Name() string { return "proto" }
