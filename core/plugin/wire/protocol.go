// Package wire is what whittle and its plugins share on the wire: the
// go-plugin handshake and protocol version, the go-plugin plugin type, and
// the gRPC adapters of the Backend service in both directions (a plugin
// serves its backend to whittle; whittle serves a run's backend to a pass
// plugin). The host (core/plugin) and the SDK (plugins/sdk) build on it.
package wire

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// ProtocolVersion is whittle's plugin protocol version. The go-plugin
// handshake refuses a plugin built for another version; bump it (and the
// proto package) for any change an older peer could misread.
const ProtocolVersion = 1

// PluginName is the go-plugin plugin-set key every whittle plugin serves.
const PluginName = "whittle"

// Handshake returns the handshake for a protocol version: whittle passes
// ProtocolVersion; tests pass others to act as older or newer plugins.
// The magic cookie only keeps a plugin binary from being run by hand; it
// is not a security measure.
func Handshake(version int) goplugin.HandshakeConfig {
	return goplugin.HandshakeConfig{
		ProtocolVersion:  uint(version),
		MagicCookieKey:   "WHITTLE_PLUGIN_MAGIC_COOKIE",
		MagicCookieValue: "whittle-plugin-7d3f0c5e9b2a4e61",
	}
}

// Plugin is the go-plugin plugin type of every whittle plugin. On the
// plugin side Register registers the services the plugin offers; on the
// host side GRPCClient hands back the raw connection as a *Conn.
type Plugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Register func(*goplugin.GRPCBroker, *grpc.Server) error
}

// GRPCServer implements goplugin.GRPCPlugin.
func (p *Plugin) GRPCServer(b *goplugin.GRPCBroker, s *grpc.Server) error {
	if p.Register == nil {
		return errors.New("whittle plugin: no services to serve")
	}
	return p.Register(b, s)
}

// GRPCClient implements goplugin.GRPCPlugin.
func (p *Plugin) GRPCClient(ctx context.Context, b *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Conn{Done: ctx, Broker: b, Conn: c}, nil
}

// Conn is the host's connection to a started plugin.
type Conn struct {
	// Done is cancelled when the plugin process exits.
	Done   context.Context
	Broker *goplugin.GRPCBroker
	Conn   *grpc.ClientConn
}

// PluginSet is the go-plugin plugin set for one protocol version.
func PluginSet(version int, p *Plugin) map[int]goplugin.PluginSet {
	return map[int]goplugin.PluginSet{version: {PluginName: p}}
}

// go-plugin reports a version mismatch as "incompatible API version with
// plugin. Plugin version: 2, Client versions: [1]".
var versionMismatch = regexp.MustCompile(`incompatible API version with plugin\. Plugin version: (\d+), Client versions: \[([\d ]*)\]`)

// VersionError is a plugin built for another protocol version.
type VersionError struct {
	Plugin string // names the plugin: `plugin "x" (/path)`
	// PluginVersion is the protocol the plugin speaks, HostVersions those
	// this whittle speaks.
	PluginVersion int
	HostVersions  []int
}

func (e *VersionError) Error() string {
	host := ""
	for i, v := range e.HostVersions {
		if i > 0 {
			host += ", "
		}
		host += strconv.Itoa(v)
	}
	advice := "rebuild the plugin against this whittle's SDK (plugins/sdk)"
	if len(e.HostVersions) > 0 && e.PluginVersion > e.HostVersions[len(e.HostVersions)-1] {
		advice = "upgrade whittle, or use a plugin release built for protocol " + host
	}
	return fmt.Sprintf("%s speaks whittle plugin protocol version %d, but this whittle speaks version %s; %s",
		e.Plugin, e.PluginVersion, host, advice)
}

// AsVersionError recognizes go-plugin's handshake version error; ok is
// false for any other error.
func AsVersionError(plugin string, err error) (*VersionError, bool) {
	if err == nil {
		return nil, false
	}
	m := versionMismatch.FindStringSubmatch(err.Error())
	if m == nil {
		return nil, false
	}
	pv, _ := strconv.Atoi(m[1])
	ve := &VersionError{Plugin: plugin, PluginVersion: pv}
	for _, f := range regexp.MustCompile(`\d+`).FindAllString(m[2], -1) {
		v, _ := strconv.Atoi(f)
		ve.HostVersions = append(ve.HostVersions, v)
	}
	return ve, true
}
