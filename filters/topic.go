package filters

import "strings"

// matchTopic reports whether a well-formed pattern (see checkTopic) matches
// topic. It walks both strings level by level without allocating.
func matchTopic(pattern, topic string) bool {
	if topic == "" {
		return false // no topic, no match
	}
	topicDone := false // every level of topic has been consumed
	for {
		plevel, prest, pmore := strings.Cut(pattern, "/")
		if plevel == "#" {
			return true // zero or more remaining levels
		}
		if topicDone {
			return false
		}
		tlevel, trest, tmore := strings.Cut(topic, "/")
		if plevel != "+" && plevel != tlevel {
			return false
		}
		if !pmore {
			return !tmore
		}
		pattern, topic, topicDone = prest, trest, !tmore
	}
}
