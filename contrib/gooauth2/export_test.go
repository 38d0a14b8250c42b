package gooauth2

// PendingCodes is how many codes s remembers between GetByCode and
// Create, for the tests (-1 if its table disagrees with itself).
func PendingCodes(s *TokenStore) int { return s.pending.len() }
