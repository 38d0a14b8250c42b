//go:build !linux

package netem

// Network is the emulated network; it exists only on Linux.
type Network struct{}

// Available returns ErrNotLinux: network emulation needs Linux network
// namespaces.
func Available() error { return ErrNotLinux }

// New returns ErrNotLinux.
func New([]Node, Config) (*Network, error) { return nil, ErrNotLinux }

// IP is empty: there is no network.
func (*Network) IP(string) string { return "" }

// Command returns bin and args unchanged.
func (*Network) Command(_, bin string, args ...string) (string, []string) { return bin, args }

// Partition returns ErrNotLinux.
func (*Network) Partition([]string) error { return ErrNotLinux }

// Heal returns ErrNotLinux.
func (*Network) Heal() error { return ErrNotLinux }

// Close does nothing.
func (*Network) Close() error { return nil }
