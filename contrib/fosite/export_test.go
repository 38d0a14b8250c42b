package fositestore

// EncodeRequest is the data a request is stored as, for the tests.
var EncodeRequest = encodeRequest
