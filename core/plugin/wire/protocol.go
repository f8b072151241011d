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
	"slices"
	"strconv"
	"strings"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// ProtocolVersion is whittle's plugin protocol version. A host refuses a
// plugin built for another version (see HostPluginSet and PluginSet);
// bump it (and the proto package) for any change an older peer could
// misread.
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

// HostPluginSet is the plugin set a host offers in the handshake: every
// protocol version up to ProtocolVersion, so that a plugin built for an
// older one still completes the handshake, and the host, reading the
// negotiated version, refuses it with a VersionError rather than a
// handshake failure.
func HostPluginSet(p *Plugin) map[int]goplugin.PluginSet {
	set := map[int]goplugin.PluginSet{}
	for v := 1; v <= ProtocolVersion; v++ {
		set[v] = goplugin.PluginSet{PluginName: p}
	}
	return set
}

// ProtocolVersionsEnv is where go-plugin tells a plugin the versions the
// host offers (comma-separated).
const ProtocolVersionsEnv = "PLUGIN_PROTOCOL_VERSIONS"

// OfferedVersions parses ProtocolVersionsEnv's value; entries that are
// not numbers are skipped.
func OfferedVersions(env string) []int {
	var out []int
	for _, f := range strings.Split(env, ",") {
		if v, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			out = append(out, v)
		}
	}
	return out
}

// PluginSet is the plugin side's go-plugin plugin set for speaking
// protocol version to a host offering the versions in offered. When the
// host offers that version, or says nothing, full is served under it.
// Otherwise describe (which must serve the Plugin service alone) is served
// under the host's highest version: the handshake then succeeds, and the
// host learns the plugin's real version from Describe and refuses it by
// name, with both versions in the message. Describe therefore stays
// compatible across protocol versions.
func PluginSet(version int, offered []int, full, describe *Plugin) map[int]goplugin.PluginSet {
	if len(offered) == 0 || slices.Contains(offered, version) {
		return map[int]goplugin.PluginSet{version: {PluginName: full}}
	}
	return map[int]goplugin.PluginSet{slices.Max(offered): {PluginName: describe}}
}

// VersionError is a plugin built for another protocol version.
type VersionError struct {
	Plugin string // names the plugin: `plugin "x" (/path)`
	// PluginVersion is the protocol the plugin speaks, HostVersion the
	// one this whittle speaks.
	PluginVersion int
	HostVersion   int
}

func (e *VersionError) Error() string {
	advice := "rebuild the plugin against this whittle's SDK (plugins/sdk)"
	if e.PluginVersion > e.HostVersion {
		advice = fmt.Sprintf("upgrade whittle, or use a plugin release built for protocol %d", e.HostVersion)
	}
	return fmt.Sprintf("%s speaks whittle plugin protocol version %d, but this whittle speaks version %d; %s",
		e.Plugin, e.PluginVersion, e.HostVersion, advice)
}

// HostStdinEnv, set to "1" in a plugin's environment, says that the
// plugin's stdin is a pipe the host holds open and never writes: reading
// end-of-file from it means the host is gone, and the plugin should exit.
const HostStdinEnv = "WHITTLE_PLUGIN_HOST_STDIN"
