// Package relay splices two connections together: it copies both ways,
// propagates half-close with CloseWrite, closes idle tunnels and counts bytes.
// Between two *net.TCPConn on Linux the copy takes the kernel splice path.
package relay
