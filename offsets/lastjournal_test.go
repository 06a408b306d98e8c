package offsets

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/streamd/streamd/journal"
)

func TestLastJournalID(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if got, err := s.LastJournalID("c1", "p1:7070"); err != nil || got != nil {
		t.Fatalf("LastJournalID of nothing = %x, %v; want nil", got, err)
	}
	for _, tt := range []struct {
		consumer, addr string
		id             []byte
		want           string
	}{
		{"", "p1:7070", jid(1), "consumer name is empty"},
		{"c1", "", jid(1), "producer address is empty"},
		{strings.Repeat("c", MaxNameLen+1), "p1:7070", jid(1), "consumer name is"},
		{"c1", "p1:7070", jid(1)[:15], "journal id is 15 bytes"},
	} {
		before := dump(t, s.DB())
		err := s.SaveLastJournalID(tt.consumer, tt.addr, tt.id)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("SaveLastJournalID(%q, %q, %x) = %v, want ErrInvalid naming %q", tt.consumer, tt.addr, tt.id, err, tt.want)
		}
		if after := dump(t, s.DB()); len(after) != len(before) {
			t.Errorf("a refused SaveLastJournalID wrote")
		}
	}
	if err := s.SaveLastJournalID("c1", "p1:7070", jid(1)); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveLastJournalID("c1", "p1:7070", jid(2)); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveLastJournalID("c11", "p1:7070", jid(3)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	for _, tt := range []struct {
		consumer, addr string
		want           []byte
	}{{"c1", "p1:7070", jid(2)}, {"c11", "p1:7070", jid(3)}, {"c1", "p2:7070", nil}} {
		if got, err := s.LastJournalID(tt.consumer, tt.addr); err != nil || string(got) != string(tt.want) {
			t.Errorf("LastJournalID(%q, %q) = %x, %v; want %x", tt.consumer, tt.addr, got, err, tt.want)
		}
	}
	// The record is one of the store's keys.
	for k := range dump(t, s.DB()) {
		if !strings.HasPrefix(k, "006f") { // dump gives keys in hex
			t.Errorf("key %q is outside the store's keys", k)
		}
	}
}

// writeLegacyLastJournal writes the record as the consumer package wrote it
// before the store had it: its own key, a version byte 1 and the id.
func writeLegacyLastJournal(t *testing.T, db *badger.DB, consumer, addr string, id []byte) {
	t.Helper()
	err := db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte("consumer/journal/"+strconv.Itoa(len(consumer))+":"+consumer+"/"+addr), append([]byte{1}, id...))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A record written by earlier builds (outside the store's keys) reads back,
// and a record saved since wins over it.
func TestLastJournalIDReadsTheLegacyRecord(t *testing.T) {
	s := openStore(t, t.TempDir())
	writeLegacyLastJournal(t, s.DB(), "billing-12", "p1:7070", jid(7))
	if got, err := s.LastJournalID("billing-12", "p1:7070"); err != nil || string(got) != string(jid(7)) {
		t.Fatalf("LastJournalID of a legacy record = %x, %v; want %x", got, err, jid(7))
	}
	if got, err := s.LastJournalID("billing-1", "2/p1:7070"); err != nil || got != nil {
		t.Fatalf("LastJournalID of another consumer = %x, %v; want nil", got, err)
	}
	if err := s.SaveLastJournalID("billing-12", "p1:7070", jid(8)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LastJournalID("billing-12", "p1:7070"); err != nil || string(got) != string(jid(8)) {
		t.Fatalf("LastJournalID after a save = %x, %v; want %x", got, err, jid(8))
	}
	// A legacy record that cannot be read is an error, not a first contact.
	writeLegacyLastJournal(t, s.DB(), "c2", "p1:7070", jid(1)[:3])
	if _, err := s.LastJournalID("c2", "p1:7070"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("LastJournalID of a short record = %v, want ErrCorrupt", err)
	}
}

// Over a journal, whose Update takes only keys beginning with 0x00, the
// record is saved and read back, and a legacy record in the journal's DB
// still reads.
func TestLastJournalIDOverAJournal(t *testing.T) {
	j, err := journal.Open(t.TempDir(), journal.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	s, err := Wrap(j, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	writeLegacyLastJournal(t, j.DB(), "replicator", "eu:7070", jid(4))
	if got, err := s.LastJournalID("replicator", "eu:7070"); err != nil || string(got) != string(jid(4)) {
		t.Fatalf("LastJournalID of a legacy record = %x, %v; want %x", got, err, jid(4))
	}
	if err := s.SaveLastJournalID("replicator", "eu:7070", jid(5)); err != nil {
		t.Fatalf("SaveLastJournalID over a journal: %v", err)
	}
	if got, err := s.LastJournalID("replicator", "eu:7070"); err != nil || string(got) != string(jid(5)) {
		t.Fatalf("LastJournalID = %x, %v; want %x", got, err, jid(5))
	}
}
