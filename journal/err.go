package journal

// Err is nil while the journal works, and an error wrapping ErrFailed once
// a write or fsync of the WAL, a commit to Badger or a checkpoint failed:
// from then on it refuses appends until reopened. Health checks poll it.
func (j *Journal) Err() error {
	if f := j.failed.Load(); f != nil {
		return *f
	}
	return nil
}
