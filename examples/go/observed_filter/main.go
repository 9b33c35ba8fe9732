// observed_filter: a filter written with the official Go SDK that does what real SDK-built
// modules do where Envoy 1.40 behaves in a way a host must reproduce (issue 9's numbered
// differences). test_go_observed.py runs it in the host; integration/test_sdk_differences.py
// runs the same traffic through Envoy and compares.
//
//   - each VM start counts go_observed.vm_starts and logs a line: Envoy runs on_vm_start on a
//     canary VM and on the main thread's VM besides each worker's;
//   - request headers: x-go-xfcc says which x-forwarded-client-cert the filter saw (Envoy's
//     connection manager removes it first), x-go-source-trailing is source.address read with a
//     path that ends in the NUL separator (an empty last segment), x-go-early-duration whether
//     request.duration is known while the request is in flight;
//   - x-go-deny: 1 -> a local 403 from the request headers (before a body arrived);
//     x-go-deny-body: 1 -> a local 400 at the end of the request body;
//   - x-go-ask: NAME -> the request waits for a callout to cluster "idp"; the callback reads the
//     answer after proxy_set_effective_context(0) (the calling context: the root's), then
//     switches back to the stream to add x-go-idp and resume it;
//   - at the end of the stream it logs its context id and what the access-log phase can read: request.duration,
//     request.size, response.size, code_details, grpc_status, flags; with the plugin configuration
//     "sizes" also response.total_size and the response's connection header;
//   - as a network filter (plugin configuration "network"): a chunk that starts with "PANIC"
//     panics. The SDK makes an HTTP context for every new context as long as NewHttpContext
//     returns one, so a plugin that serves both kinds must choose by its configuration.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o observed_filter.wasm .
package main

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

const idpCluster = "idp"

func main() {}

func init() {
	proxywasm.SetVMContext(&vmContext{})
}

type vmContext struct {
	types.DefaultVMContext
}

func (*vmContext) OnVMStart(int) types.OnVMStartStatus {
	proxywasm.DefineCounterMetric("go_observed.vm_starts").Increment(1)
	proxywasm.LogInfo("go observed_filter: VM started")
	return types.OnVMStartStatusOK
}

func (*vmContext) NewPluginContext(uint32) types.PluginContext {
	return &pluginContext{}
}

type pluginContext struct {
	types.DefaultPluginContext
	network, sizes bool
}

func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	config, _ := proxywasm.GetPluginConfiguration()
	p.network = string(config) == "network"
	p.sizes = string(config) == "sizes"
	return types.OnPluginStartStatusOK
}

func (p *pluginContext) NewHttpContext(contextID uint32) types.HttpContext {
	if p.network {
		return nil
	}
	return &httpContext{contextID: contextID, sizes: p.sizes}
}

func (*pluginContext) NewTcpContext(uint32) types.TcpContext {
	return &tcpContext{}
}

// ---- HTTP -------------------------------------------------------------------

type httpContext struct {
	types.DefaultHttpContext
	contextID uint32
	denyBody  bool
	sizes     bool
}

func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	xfcc, err := proxywasm.GetHttpRequestHeader("x-forwarded-client-cert")
	if err != nil {
		xfcc = "<" + err.Error() + ">"
	}
	must(proxywasm.AddHttpRequestHeader("x-go-xfcc", xfcc))
	must(proxywasm.AddHttpRequestHeader("x-go-source-trailing", property("source", "address", "")))
	_, err = proxywasm.GetProperty([]string{"request", "duration"})
	must(proxywasm.AddHttpRequestHeader("x-go-early-duration", fmt.Sprint(err == nil)))

	if v, _ := proxywasm.GetHttpRequestHeader("x-go-deny"); v != "" {
		must(proxywasm.SendHttpResponse(403, [][2]string{{"x-go-denied", "headers"}}, []byte("denied\n"), -1))
		return types.ActionPause
	}
	h.denyBody = header("x-go-deny-body") != ""
	if user := header("x-go-ask"); user != "" {
		return h.ask(user)
	}
	return types.ActionContinue
}

func (h *httpContext) OnHttpRequestBody(_ int, endOfStream bool) types.Action {
	if h.denyBody && endOfStream {
		must(proxywasm.SendHttpResponse(400, [][2]string{{"x-go-denied", "body"}}, []byte("bad body\n"), -1))
		return types.ActionPause
	}
	return types.ActionContinue
}

// ask holds the request until the idp cluster answers. The SDK makes the stream the effective
// context before the callback runs; context 0 is the context whose callback runs (the root's,
// which holds the callout's answer), as the C++ SDK uses it.
func (h *httpContext) ask(user string) types.Action {
	headers := [][2]string{{":method", "GET"}, {":path", "/users/" + user}, {":authority", "idp.internal"}}
	_, err := proxywasm.DispatchHttpCall(idpCluster, headers, nil, nil, 3000, func(_, bodySize, _ int) {
		answer := "<no answer>"
		if err := proxywasm.SetEffectiveContext(0); err != nil {
			answer = "<context 0: " + err.Error() + ">"
		} else if body, err := proxywasm.GetHttpCallResponseBody(0, bodySize); err != nil {
			answer = "<body: " + err.Error() + ">"
		} else {
			answer = string(body)
		}
		proxywasm.LogInfof("idp answered %q via context 0", answer)
		if err := proxywasm.SetEffectiveContext(h.contextID); err != nil {
			proxywasm.LogErrorf("stream %d is gone: %v", h.contextID, err)
			return
		}
		must(proxywasm.AddHttpRequestHeader("x-go-idp", answer))
		must(proxywasm.ResumeHttpRequest())
	})
	if err != nil {
		proxywasm.LogErrorf("idp callout not sent: %v", err)
		return types.ActionContinue
	}
	return types.ActionPause
}

// OnHttpStreamDone runs in Envoy's access-log phase, where the request's and the response's
// sizes, its duration and how it ended are known.
func (h *httpContext) OnHttpStreamDone() {
	_, err := proxywasm.GetProperty([]string{"request", "duration"})
	proxywasm.LogInfof("stream %d done: duration known=%t request size=%s response size=%s code_details=%s"+
		" grpc_status=%s flags=%s", h.contextID, err == nil, number("request", "size"), number("response", "size"),
		property("response", "code_details"), number("response", "grpc_status"), number("response", "flags"))
	if !h.sizes {
		return
	}
	connection, _ := proxywasm.GetHttpResponseHeader("connection")
	proxywasm.LogInfof("stream done: response total_size=%s connection=%q", number("response", "total_size"), connection)
}

// ---- network filter -----------------------------------------------------------

type tcpContext struct {
	types.DefaultTcpContext
}

func (*tcpContext) OnDownstreamData(dataSize int, _ bool) types.Action {
	data, err := proxywasm.GetDownstreamData(0, dataSize)
	if err == nil && strings.HasPrefix(string(data), "PANIC") {
		panic("the client asked for a panic")
	}
	return types.ActionContinue
}

// ---- helpers ------------------------------------------------------------------

func header(name string) string {
	v, _ := proxywasm.GetHttpRequestHeader(name)
	return v
}

// property is a string property, or the error in angle brackets.
func property(path ...string) string {
	v, err := proxywasm.GetProperty(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(v)
}

// number is an integer property (int64 or uint64, little-endian), or the error in angle brackets.
func number(path ...string) string {
	v, err := proxywasm.GetProperty(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	if len(v) != 8 {
		return fmt.Sprintf("<%d bytes>", len(v))
	}
	return fmt.Sprint(int64(binary.LittleEndian.Uint64(v)))
}

// must logs a failed hostcall; the filter goes on.
func must(err error) {
	if err != nil {
		proxywasm.LogErrorf("hostcall failed: %v", err)
	}
}
