package journal

import (
	"reflect"

	"github.com/dgraph-io/badger/v4"
)

// checkUpdateKeys refuses the transaction of an Update if it writes a key
// that does not begin with the byte 0x00: the journal's own keys are not
// writable, as AppendWith refuses them in a Write.
//
// Badger does not list a transaction's writes, so this reads them from its
// unexported pendingWrites map (the key of each write, as a string). A
// Badger without that map fails every Update here rather than let a write
// through unchecked; TestUpdateRefusesKeysOutsideZero catches it.
func checkUpdateKeys(txn *badger.Txn) error {
	pending := reflect.ValueOf(txn).Elem().FieldByName("pendingWrites")
	if pending.Kind() != reflect.Map || pending.Type().Key().Kind() != reflect.String {
		return invalid("Update: cannot check the keys of a transaction with this version of Badger")
	}
	for it := pending.MapRange(); it.Next(); {
		if key := it.Key().String(); key == "" || key[0] != 0x00 {
			return invalid("Update: key %q does not begin with the byte 0x00 (the journal's own keys are not writable)", key)
		}
	}
	return nil
}
