// header_filter: the per-request benchmark filter of `make bench` (bench/sdk_bench.py), on the
// official Go SDK. Request headers: adds x-bench; response headers: adds x-bench-response.
// With the plugin configuration "log" it also logs every request and response header
// (one proxy_log per header), the "filter that logs" figure.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o header_filter.wasm .
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() {
	proxywasm.SetVMContext(&vmContext{})
}

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) NewPluginContext(uint32) types.PluginContext { return &pluginContext{} }

type pluginContext struct {
	types.DefaultPluginContext
	logHeaders bool
}

func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, _ := proxywasm.GetPluginConfiguration()
	p.logHeaders = string(data) == "log"
	return types.OnPluginStartStatusOK
}

func (p *pluginContext) NewHttpContext(uint32) types.HttpContext {
	return &httpContext{logHeaders: p.logHeaders}
}

type httpContext struct {
	types.DefaultHttpContext
	logHeaders bool
}

func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	if h.logHeaders {
		logAll(proxywasm.GetHttpRequestHeaders())
	}
	_ = proxywasm.AddHttpRequestHeader("x-bench", "1")
	return types.ActionContinue
}

func (h *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	if h.logHeaders {
		logAll(proxywasm.GetHttpResponseHeaders())
	}
	_ = proxywasm.AddHttpResponseHeader("x-bench-response", "1")
	return types.ActionContinue
}

func logAll(headers [][2]string, err error) {
	if err != nil {
		proxywasm.LogErrorf("cannot read headers: %v", err)
		return
	}
	for _, kv := range headers {
		proxywasm.LogInfof("header %s: %s", kv[0], kv[1])
	}
}
