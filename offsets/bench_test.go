package offsets

import (
	"fmt"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// saveShape is the entities of a benchmark's saves: batch of them per
// save, out of a population, so that saves both create and raise seqNrs.
type saveShape struct {
	name              string
	batch, population int
}

// spread: each entity named once per 256 saves (many entities, little
// repetition); busy: a catch-up over 10,000 entities saving every 1,000
// events (bench workload 2), each entity named every ten saves.
var (
	spread = saveShape{"spread", 256, 1 << 16}
	busy   = saveShape{"busy", 1000, 10_000}
)

// applied returns the batch of save number i.
func (sh saveShape) applied(ids []string, i int) []Applied {
	applied := make([]Applied, sh.batch)
	for j := range applied {
		n := i*sh.batch + j
		applied[j] = Applied{EntityType: "order", EntityID: ids[n%sh.population], SeqNr: uint64(n/sh.population + 1)}
	}
	return applied
}

// BenchmarkSave measures the at-least-once save of a batch of applied
// seqNrs and an offset, durable (fsync per commit) and async, for each
// shape. The baseline writes the same keys to Badger blindly in one
// transaction (no runs, no offset logic), in the same run.
func BenchmarkSave(b *testing.B) {
	ids := make([]string, 1<<16)
	for i := range ids {
		ids[i] = fmt.Sprintf("order-%08d", i)
	}
	for _, sh := range []saveShape{spread, busy} {
		for _, mode := range []struct {
			name       string
			durability Durability
			baseline   bool
		}{
			{"sync", DurabilitySync, false},
			{"async", DurabilityAsync, false},
			{"async-baseline-blind-badger", DurabilityAsync, true},
		} {
			b.Run(sh.name+"/"+mode.name, func(b *testing.B) {
				s, err := Open(b.TempDir(), Options{Logger: quiet, Durability: mode.durability})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				k := Key{Consumer: "bench", JournalID: jid(1), Slices: AllSlices}
				i := 0
				for b.Loop() {
					applied := sh.applied(ids, i)
					i++
					if mode.baseline {
						err = s.DB().Update(func(txn *badger.Txn) error {
							if err := txn.Set(offsetKey(k), encodeOffset(Offset{Offset: uint64(i)})); err != nil {
								return err
							}
							for _, a := range applied {
								if err := txn.Set(appliedKey(k.Consumer, k.JournalID, a.EntityType, a.EntityID), encodeSeqNr(a.SeqNr)); err != nil {
									return err
								}
							}
							return nil
						})
					} else {
						err = s.Save(k, uint64(i), applied)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				secs := b.Elapsed().Seconds()
				b.ReportMetric(float64(i)/secs, "saves/s")
				b.ReportMetric(float64(i*sh.batch)/secs, "entities/s")
			})
		}
	}
}

// BenchmarkAppliedSeqNr measures the dedupe lookup: one point read outside a
// transaction, over 64k stored entities.
func BenchmarkAppliedSeqNr(b *testing.B) {
	s, err := Open(b.TempDir(), Options{Logger: quiet, Durability: DurabilityAsync})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ids := make([]string, 1<<16)
	for i := range ids {
		ids[i] = fmt.Sprintf("order-%08d", i)
	}
	k := Key{Consumer: "bench", JournalID: jid(1), Slices: AllSlices}
	for i := range len(ids) / spread.batch {
		if err := s.Save(k, uint64(i), spread.applied(ids, i)); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		n, err := s.AppliedSeqNr(nil, "bench", k.JournalID, "order", ids[i%len(ids)])
		if err != nil || n != 1 {
			b.Fatalf("AppliedSeqNr = %d, %v", n, err)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "reads/s")
}
