package procsync

// DefaultMaxRecord is the default maximum record size: 64 KiB, well under
// the ~212 KB a seqpacket record can have with the default socket buffer.
const DefaultMaxRecord = 64 * 1024

// MaxRecordCeiling is the largest maximum [NewLimits] accepts: above it the
// kernel refuses records with EMSGSIZE under default socket buffers.
const MaxRecordCeiling = 200 * 1024

// minRecord is the smallest maximum [NewLimits] accepts.
const minRecord = 16

// MaxFdsPerRecord is how many fds one record may carry.
const MaxFdsPerRecord = 1

// Limits are the size limits the codec enforces on encode and decode. The
// zero value means the defaults.
type Limits struct {
	maxRecord int
}

// DefaultLimits returns limits with a maximum record of [DefaultMaxRecord].
func DefaultLimits() Limits { return Limits{maxRecord: DefaultMaxRecord} }

// NewLimits returns limits with a maximum record size of maxRecord bytes,
// clamped to 16..[MaxRecordCeiling] (as every implementation does).
func NewLimits(maxRecord int) Limits {
	return Limits{maxRecord: min(max(maxRecord, minRecord), MaxRecordCeiling)}
}

// MaxRecord is the maximum record size in bytes, length prefix included.
func (l Limits) MaxRecord() int {
	if l.maxRecord == 0 {
		return DefaultMaxRecord
	}
	return l.maxRecord
}
