// tcp_filter: a network (L4) filter with the official Go SDK.
// See test_go_tcp_filter.py next to this folder.
//
//   - OnNewConnection logs the client's address (property source.address) and
//     counts the connection;
//   - bytes from the client are upper-cased on their way to the upstream; a line
//     "QUIT" closes the connection from the filter instead;
//   - bytes from the upstream get the prefix "go> ";
//   - when the connection ends, the filter logs how many bytes went each way.
package main

import (
	"bytes"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() {
	proxywasm.SetPluginContext(func(uint32) types.PluginContext { return &pluginContext{} })
}

type pluginContext struct {
	types.DefaultPluginContext
	connections proxywasm.MetricCounter
	bytesIn     proxywasm.MetricCounter
}

func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	p.connections = proxywasm.DefineCounterMetric("go_tcp.connections")
	p.bytesIn = proxywasm.DefineCounterMetric("go_tcp.downstream_bytes")
	return types.OnPluginStartStatusOK
}

func (p *pluginContext) NewTcpContext(contextID uint32) types.TcpContext {
	return &tcpContext{plugin: p}
}

type tcpContext struct {
	types.DefaultTcpContext
	plugin         *pluginContext
	in, out        int
	closedByFilter bool
}

func (t *tcpContext) OnNewConnection() types.Action {
	t.plugin.connections.Increment(1)
	addr, err := proxywasm.GetProperty([]string{"source", "address"})
	if err != nil {
		addr = []byte("unknown")
	}
	proxywasm.LogInfof("new connection from %s", addr)
	return types.ActionContinue
}

func (t *tcpContext) OnDownstreamData(dataSize int, endOfStream bool) types.Action {
	if dataSize == 0 {
		return types.ActionContinue
	}
	data, err := proxywasm.GetDownstreamData(0, dataSize)
	if err != nil {
		proxywasm.LogErrorf("cannot read downstream data: %v", err)
		return types.ActionContinue
	}
	t.in += len(data)
	t.plugin.bytesIn.Increment(uint64(len(data)))
	if bytes.Equal(bytes.TrimSpace(data), []byte("QUIT")) {
		proxywasm.LogInfo("client said QUIT: closing")
		t.closedByFilter = true
		if err := proxywasm.CloseDownstream(); err != nil {
			proxywasm.LogErrorf("close failed: %v", err)
		}
		return types.ActionPause
	}
	if err := proxywasm.ReplaceDownstreamData(bytes.ToUpper(data)); err != nil {
		proxywasm.LogErrorf("cannot replace downstream data: %v", err)
	}
	return types.ActionContinue
}

func (t *tcpContext) OnUpstreamData(dataSize int, endOfStream bool) types.Action {
	if dataSize == 0 {
		return types.ActionContinue
	}
	t.out += dataSize
	if err := proxywasm.PrependUpstreamData([]byte("go> ")); err != nil {
		proxywasm.LogErrorf("cannot prepend upstream data: %v", err)
	}
	return types.ActionContinue
}

func (t *tcpContext) OnDownstreamClose(peer types.PeerType) {
	proxywasm.LogInfof("downstream closed (peer type %d)", peer)
}

func (t *tcpContext) OnUpstreamClose(peer types.PeerType) {
	proxywasm.LogInfof("upstream closed (peer type %d)", peer)
}

func (t *tcpContext) OnStreamDone() {
	proxywasm.LogInfof("connection done: %d bytes in, %d bytes out, closed by filter: %t", t.in, t.out, t.closedByFilter)
}
